package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"banger/internal/api"
)

// A VM's lifetime (api.VMLifetime: TTL, idle-stop, owned by a vm run) is a
// row of vm_lifetimes, deleted with its VM (ON DELETE CASCADE); a VM with
// none has no row. GetVM and ListVMs fill api.VM.Lifetime from it.

// migrateLifetimes adds vm_lifetimes.
func migrateLifetimes(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE IF NOT EXISTS vm_lifetimes (
			vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
			expires_at TEXT NOT NULL DEFAULT '',
			ttl_action TEXT NOT NULL DEFAULT '',
			idle_stop_ns INTEGER NOT NULL DEFAULT 0,
			run INTEGER NOT NULL DEFAULT 0
		)`,
	)
}

// SetVMLifetime stores the lifetime of the VM with id; a zero lifetime
// removes it. A missing VM is NotFound.
func (s *Store) SetVMLifetime(ctx context.Context, id string, lt api.VMLifetime) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		if ok, err := exists(ctx, tx, `SELECT count(*) FROM vms WHERE id = ?`, id); err != nil || !ok {
			if err == nil {
				err = vmNotFound(id)
			}
			return err
		}
		if lt.IsZero() {
			_, err := tx.ExecContext(ctx, `DELETE FROM vm_lifetimes WHERE vm_id = ?`, id)
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO vm_lifetimes (vm_id, expires_at, ttl_action, idle_stop_ns, run)
			VALUES (?, ?, ?, ?, ?)`, id, fmtTime(lt.ExpiresAt), lt.TTLAction, int64(lt.IdleStop), lt.Run)
		if err != nil {
			return fmt.Errorf("storing the lifetime of vm %s: %w", id, err)
		}
		return nil
	})
}

// vmLifetimes returns the stored lifetimes by VM id (all of them when id
// is "").
func vmLifetimes(ctx context.Context, q querier, id string) (map[string]*api.VMLifetime, error) {
	query := `SELECT vm_id, expires_at, ttl_action, idle_stop_ns, run FROM vm_lifetimes`
	var args []any
	if id != "" {
		query += ` WHERE vm_id = ?`
		args = append(args, id)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("reading vm lifetimes: %w", err)
	}
	defer rows.Close()
	out := map[string]*api.VMLifetime{}
	for rows.Next() {
		var vmID, expires string
		var idle int64
		lt := &api.VMLifetime{}
		if err := rows.Scan(&vmID, &expires, &lt.TTLAction, &idle, &lt.Run); err != nil {
			return nil, fmt.Errorf("reading vm lifetimes: %w", err)
		}
		if err := (*timeField)(&lt.ExpiresAt).set(expires); err != nil {
			return nil, fmt.Errorf("lifetime of vm %s: %w", vmID, err)
		}
		lt.IdleStop = time.Duration(idle)
		out[vmID] = lt
	}
	return out, rows.Err()
}

// withLifetimes fills vms' Lifetime and Origin.
func withLifetimes(ctx context.Context, q querier, vms []api.VM, id string) ([]api.VM, error) {
	lts, err := vmLifetimes(ctx, q, id)
	if err != nil {
		return nil, err
	}
	origins, err := vmOrigins(ctx, q, id)
	if err != nil {
		return nil, err
	}
	for i := range vms {
		vms[i].Lifetime = lts[vms[i].ID]
		vms[i].Origin = origins[vms[i].ID]
	}
	return vms, nil
}
