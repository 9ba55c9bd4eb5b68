package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"

	"banger/internal/api"
)

// migrateNetPolicies adds each VM's egress policy (a row only when the VM
// has one; none means the configured default). Rows go with their VM.
func migrateNetPolicies(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE IF NOT EXISTS vm_net_policies (
			vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
			policy TEXT NOT NULL
		)`,
	)
}

// NetPolicy returns the egress policy stored for the VM with id; ok is
// false when it has none (the configured default applies).
func (s *Store) NetPolicy(ctx context.Context, id string) (p api.NetPolicy, ok bool, err error) {
	var raw string
	err = s.db.QueryRowContext(ctx, `SELECT policy FROM vm_net_policies WHERE vm_id = ?`, id).Scan(&raw)
	if errors.Is(err, sql.ErrNoRows) {
		return api.NetPolicy{}, false, nil
	}
	if err != nil {
		return api.NetPolicy{}, false, fmt.Errorf("reading network policy of vm %s: %w", id, err)
	}
	if err := json.Unmarshal([]byte(raw), &p); err != nil {
		return api.NetPolicy{}, false, fmt.Errorf("decoding network policy of vm %s: %w", id, err)
	}
	return p, true, nil
}

// SetNetPolicy stores the egress policy of the VM with id.
func (s *Store) SetNetPolicy(ctx context.Context, id string, p api.NetPolicy) error {
	raw, err := json.Marshal(p)
	if err != nil {
		return err
	}
	_, err = s.db.ExecContext(ctx, `INSERT INTO vm_net_policies (vm_id, policy) VALUES (?, ?)
		ON CONFLICT(vm_id) DO UPDATE SET policy = excluded.policy`, id, string(raw))
	if err != nil {
		return fmt.Errorf("storing network policy of vm %s: %w", id, err)
	}
	return nil
}
