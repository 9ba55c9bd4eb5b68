package store

import (
	"context"
	"database/sql"
	"fmt"
)

// Data patches are one-off fixes to rows an older banger wrote (incus keeps
// them beside its schema updates): the owner of the rows runs one at daemon
// start, after the migrations, unless PatchApplied says it ran, and calls
// RecordPatch once it has succeeded. A patch must be idempotent: a daemon
// killed between the work and RecordPatch runs it again.

// PatchApplied reports whether the data patch name has been recorded.
func (s *Store) PatchApplied(ctx context.Context, name string) (bool, error) {
	ok, err := exists(ctx, s.db, `SELECT count(*) FROM patches WHERE name = ?`, name)
	if err != nil {
		return false, fmt.Errorf("reading patch %q: %w", name, err)
	}
	return ok, nil
}

// RecordPatch records that the data patch name has run.
func (s *Store) RecordPatch(ctx context.Context, name string) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO patches (name, applied_at) VALUES (?, ?)`, name, fmtTime(now()))
		if err != nil {
			return fmt.Errorf("recording patch %q: %w", name, err)
		}
		return nil
	})
}

// ForgetPatch removes the record of the data patch name, so that the next
// daemon start runs it again (tests that make a database look older).
func (s *Store) ForgetPatch(ctx context.Context, name string) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM patches WHERE name = ?`, name)
		return err
	})
}
