package store

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"
)

// migration is one numbered schema step. Each runs in its own transaction
// together with the schema_migrations row that records it.
type migration struct {
	id   int
	name string
	fn   func(ctx context.Context, tx *sql.Tx) error
}

// migrations is the ordered list this binary knows. Append only: never
// renumber or edit a shipped migration; add a new one instead. A fresh
// install runs them all.
var migrations = []migration{
	{1, "baseline", migrateBaseline},
	{2, "agent transport and metrics", migrateAgentMetrics},
	{3, "handles out of sqlite", migrateHandlesOut},
	{4, "data patches", migratePatches},
	{5, "vm network policies", migrateNetPolicies},
	{6, "vm lifetimes", migrateLifetimes},
	{7, "snapshots", migrateSnapshots},
}

// latestID is the highest migration id this binary knows.
func latestID() int { return migrations[len(migrations)-1].id }

const createMigrations = `CREATE TABLE IF NOT EXISTS schema_migrations (
	id INTEGER PRIMARY KEY,
	name TEXT NOT NULL,
	applied_at TEXT NOT NULL
)`

// migrateBaseline creates the first schema. It stored the engine pid and tap
// device in vms; migration 3 moves them out (they are VMHandles now).
func migrateBaseline(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE images (
			id TEXT PRIMARY KEY,
			name TEXT NOT NULL UNIQUE,
			fingerprint TEXT NOT NULL DEFAULT '',
			parent TEXT NOT NULL DEFAULT '',
			managed INTEGER NOT NULL DEFAULT 0,
			source TEXT NOT NULL DEFAULT '',
			kernel_version TEXT NOT NULL DEFAULT '',
			dir TEXT NOT NULL DEFAULT '',
			kernel TEXT NOT NULL DEFAULT '',
			vmlinux TEXT NOT NULL DEFAULT '',
			initrd TEXT NOT NULL DEFAULT '',
			rootfs TEXT NOT NULL DEFAULT '',
			work_seed TEXT NOT NULL DEFAULT '',
			kernel_size INTEGER NOT NULL DEFAULT 0,
			vmlinux_size INTEGER NOT NULL DEFAULT 0,
			initrd_size INTEGER NOT NULL DEFAULT 0,
			rootfs_size INTEGER NOT NULL DEFAULT 0,
			work_seed_size INTEGER NOT NULL DEFAULT 0,
			engines TEXT NOT NULL DEFAULT '[]',
			features TEXT NOT NULL DEFAULT '[]',
			recipe TEXT NOT NULL DEFAULT '',
			created_at TEXT NOT NULL
		)`,
		`CREATE TABLE vms (
			id TEXT PRIMARY KEY,
			name TEXT NOT NULL UNIQUE,
			image_id TEXT REFERENCES images(id),
			image_name TEXT NOT NULL DEFAULT '',
			vcpus INTEGER NOT NULL,
			memory_mib INTEGER NOT NULL,
			disk_bytes INTEGER NOT NULL,
			created_at TEXT NOT NULL,
			updated_at TEXT NOT NULL,
			state TEXT NOT NULL,
			guest_ip TEXT NOT NULL UNIQUE,
			mac TEXT NOT NULL UNIQUE,
			dns_name TEXT NOT NULL DEFAULT '',
			engine TEXT NOT NULL DEFAULT '',
			accel TEXT NOT NULL DEFAULT '',
			api_socket TEXT NOT NULL DEFAULT '',
			agent_socket TEXT NOT NULL DEFAULT '',
			vsock_cid INTEGER NOT NULL UNIQUE,
			serial_log_path TEXT NOT NULL DEFAULT '',
			engine_log_path TEXT NOT NULL DEFAULT '',
			vm_dir TEXT NOT NULL DEFAULT '',
			system_disk TEXT NOT NULL DEFAULT '',
			system_disk_kind TEXT NOT NULL DEFAULT '',
			work_disk TEXT NOT NULL DEFAULT '',
			last_error TEXT NOT NULL DEFAULT '',
			started_at TEXT NOT NULL DEFAULT '',
			stopped_at TEXT NOT NULL DEFAULT '',
			pid INTEGER NOT NULL DEFAULT 0,
			tap TEXT NOT NULL DEFAULT ''
		)`,
	)
}

// migrateAgentMetrics adds the guest agent's transport and the engine
// metrics file, backfills the transport existing Firecracker VMs used, and
// indexes vms by image for the "image in use" check.
func migrateAgentMetrics(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`ALTER TABLE vms ADD COLUMN agent_transport TEXT NOT NULL DEFAULT ''`,
		`ALTER TABLE vms ADD COLUMN metrics_path TEXT NOT NULL DEFAULT ''`,
		`UPDATE vms SET agent_transport = 'vsock-hybrid' WHERE engine = 'firecracker' AND agent_transport = ''`,
		`CREATE INDEX IF NOT EXISTS vms_image_id ON vms(image_id)`,
	)
}

// migrateHandlesOut drops vms.pid and vms.tap: what is true only while the
// engine runs lives in VMHandles (handles.json), never in SQLite.
func migrateHandlesOut(ctx context.Context, tx *sql.Tx) error {
	for _, col := range []string{"pid", "tap"} {
		if err := dropColumnIfExists(ctx, tx, "vms", col); err != nil {
			return err
		}
	}
	return nil
}

// migratePatches adds the table that records data patches: work on the
// rows (not the schema) that runs once, at daemon start, after the
// migrations (see Store.PatchApplied).
func migratePatches(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE IF NOT EXISTS patches (
			name TEXT PRIMARY KEY,
			applied_at TEXT NOT NULL
		)`,
	)
}

func execAll(ctx context.Context, tx *sql.Tx, stmts ...string) error {
	for _, q := range stmts {
		if _, err := tx.ExecContext(ctx, q); err != nil {
			return fmt.Errorf("running %.40q: %w", q, err)
		}
	}
	return nil
}

// columnExists reports whether table has column.
func columnExists(ctx context.Context, tx *sql.Tx, table, column string) (bool, error) {
	var n int
	err := tx.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, table, column).Scan(&n)
	if err != nil {
		return false, fmt.Errorf("reading columns of %s: %w", table, err)
	}
	return n > 0, nil
}

// dropColumnIfExists drops table.column if it is there; running it again is
// a no-op. table and column are identifiers from the migration code, never
// user input.
func dropColumnIfExists(ctx context.Context, tx *sql.Tx, table, column string) error {
	ok, err := columnExists(ctx, tx, table, column)
	if err != nil || !ok {
		return err
	}
	if _, err := tx.ExecContext(ctx, fmt.Sprintf(`ALTER TABLE %q DROP COLUMN %q`, table, column)); err != nil {
		return fmt.Errorf("dropping column %s.%s: %w", table, column, err)
	}
	return nil
}

// appliedIDs returns every id recorded in schema_migrations, sorted, known
// or not.
func appliedIDs(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}) ([]int, error) {
	return queryAll(ctx, q, "reading schema_migrations", scanOne[int], `SELECT id FROM schema_migrations ORDER BY id`)
}

// migrate applies, in order, every migration in list that is not recorded
// yet. Ids it does not know (written by a newer banger) are left alone.
func (s *Store) migrate(ctx context.Context, list []migration) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if _, err := s.db.ExecContext(ctx, createMigrations); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	for _, m := range list {
		err := s.writeTxLocked(ctx, func(tx *sql.Tx) error {
			// Re-read inside the IMMEDIATE transaction: another process may
			// have applied it while we waited for the lock.
			var n int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE id = ?`, m.id).Scan(&n); err != nil {
				return fmt.Errorf("reading schema_migrations: %w", err)
			}
			if n > 0 {
				return nil
			}
			if err := m.fn(ctx, tx); err != nil {
				return err
			}
			_, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations (id, name, applied_at) VALUES (?, ?, ?)`,
				m.id, m.name, now().Format(time.RFC3339))
			return err
		})
		if err != nil {
			return fmt.Errorf("applying migration %d (%s) to %s: %w", m.id, m.name, s.path, err)
		}
	}
	return nil
}

// SchemaInfo describes the migration state of a database. Unknown lists ids
// applied by a newer banger that this binary does not know; `banger doctor`
// warns about them.
type SchemaInfo struct {
	Current int   // highest applied id this binary knows
	Latest  int   // highest id this binary knows
	Applied []int // every applied id, sorted
	Unknown []int // applied ids this binary does not know, sorted
}

// SchemaInfo reports which migrations are applied.
func (s *Store) SchemaInfo(ctx context.Context) (SchemaInfo, error) {
	ids, err := appliedIDs(ctx, s.db)
	if err != nil {
		return SchemaInfo{}, err
	}
	info := SchemaInfo{Latest: latestID(), Applied: ids}
	for _, id := range ids {
		known := slices.ContainsFunc(migrations, func(m migration) bool { return m.id == id })
		if !known {
			info.Unknown = append(info.Unknown, id)
		} else if id > info.Current {
			info.Current = id
		}
	}
	return info, nil
}
