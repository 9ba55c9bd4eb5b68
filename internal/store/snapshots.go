package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"

	"banger/internal/api"
)

// A snapshot (api.Snapshot) is a row of snapshots: its public record as JSON
// (meta) beside the columns the store queries, and the orchestrator's own
// record of its files (record: engine state, disk records), opaque here.
// vm_origins says which snapshot a VM was started from; it goes with its VM
// (ON DELETE CASCADE), so a snapshot's live children are the VMs whose
// origin it is. An image cannot be deleted while snapshots of it exist.

// Snapshot states.
const (
	SnapshotCreating = "creating" // files being written; a daemon start removes it
	SnapshotReady    = "ready"
)

// SnapshotRow is a stored snapshot.
type SnapshotRow struct {
	api.Snapshot
	VMID   string
	State  string
	Record json.RawMessage
}

// migrateSnapshots adds snapshots and vm_origins.
func migrateSnapshots(ctx context.Context, tx *sql.Tx) error {
	return execAll(ctx, tx,
		`CREATE TABLE IF NOT EXISTS snapshots (
			id TEXT PRIMARY KEY,
			name TEXT NOT NULL UNIQUE,
			kind TEXT NOT NULL,
			image_id TEXT NOT NULL REFERENCES images(id),
			vm_id TEXT NOT NULL DEFAULT '',
			state TEXT NOT NULL,
			meta TEXT NOT NULL,
			record TEXT NOT NULL DEFAULT '{}',
			created_at TEXT NOT NULL
		)`,
		`CREATE TABLE IF NOT EXISTS vm_origins (
			vm_id TEXT PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
			snapshot_id TEXT NOT NULL
		)`,
	)
}

func snapshotNotFound(name string) error {
	return api.NotFound("snapshot %q not found", name).WithAction("snapshot list")
}

// CreateSnapshot stores a new snapshot (its ID is made when empty). A name
// in use is AlreadyExists.
func (s *Store) CreateSnapshot(ctx context.Context, row *SnapshotRow) error {
	if row.ID == "" {
		row.ID = newID()
	}
	if row.CreatedAt.IsZero() {
		row.CreatedAt = now()
	}
	meta, err := json.Marshal(row.Snapshot)
	if err != nil {
		return err
	}
	rec := row.Record
	if len(rec) == 0 {
		rec = json.RawMessage("{}")
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO snapshots (id, name, kind, image_id, vm_id, state, meta, record, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, row.ID, row.Name, row.Kind, row.ImageID, row.VMID, row.State,
			string(meta), string(rec), fmtTime(row.CreatedAt))
		if isUniqueViolation(err) {
			return api.AlreadyExists("snapshot %q already exists", row.Name).
				WithFix("pick another name, or delete it").WithAction("snapshot delete", row.Name)
		}
		if isForeignKeyViolation(err) {
			return api.NotFound("image %s of snapshot %q is gone", row.ImageID, row.Name)
		}
		if err != nil {
			return fmt.Errorf("storing snapshot %s: %w", row.Name, err)
		}
		return nil
	})
}

// UpdateSnapshot overwrites the snapshot with row.ID (name, kind, state,
// meta, record).
func (s *Store) UpdateSnapshot(ctx context.Context, row SnapshotRow) error {
	meta, err := json.Marshal(row.Snapshot)
	if err != nil {
		return err
	}
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE snapshots SET name = ?, kind = ?, state = ?, meta = ?, record = ? WHERE id = ?`,
			row.Name, row.Kind, row.State, string(meta), string(row.Record), row.ID)
		if isUniqueViolation(err) {
			return api.AlreadyExists("snapshot %q already exists", row.Name)
		}
		if err != nil {
			return fmt.Errorf("updating snapshot %s: %w", row.Name, err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return snapshotNotFound(row.Name)
		}
		return nil
	})
}

const snapshotColumns = `id, name, kind, image_id, vm_id, state, meta, record, created_at`

func scanSnapshot(sc scanner) (SnapshotRow, error) {
	var r SnapshotRow
	var meta, rec, created, name, kind, imageID string
	if err := sc.Scan(&r.ID, &name, &kind, &imageID, &r.VMID, &r.State, &meta, &rec, &created); err != nil {
		return SnapshotRow{}, err
	}
	if err := json.Unmarshal([]byte(meta), &r.Snapshot); err != nil {
		return SnapshotRow{}, fmt.Errorf("snapshot %s: reading its record: %w", name, err)
	}
	r.ID, r.Name, r.Kind, r.ImageID = r.Snapshot.ID, name, kind, imageID
	if r.ID == "" {
		return SnapshotRow{}, fmt.Errorf("snapshot %s: record without id", name)
	}
	r.Record = json.RawMessage(rec)
	t, err := parseTime(created)
	if err != nil {
		return SnapshotRow{}, err
	}
	r.CreatedAt = t
	return r, nil
}

// GetSnapshot returns the snapshot with that name or ID, its Children
// filled.
func (s *Store) GetSnapshot(ctx context.Context, nameOrID string) (SnapshotRow, error) {
	r, err := getByNameOrID(ctx, s.db, "snapshots", snapshotColumns, nameOrID, scanSnapshot, snapshotNotFound)
	if err != nil {
		return SnapshotRow{}, err
	}
	if r.Children, err = s.SnapshotChildren(ctx, r.ID); err != nil {
		return SnapshotRow{}, err
	}
	return r, nil
}

// ListSnapshots returns every snapshot by name, Children filled.
func (s *Store) ListSnapshots(ctx context.Context) ([]SnapshotRow, error) {
	out, err := queryAll(ctx, s.db, "listing snapshots", scanSnapshot, `SELECT `+snapshotColumns+` FROM snapshots ORDER BY name`)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if out[i].Children, err = s.SnapshotChildren(ctx, out[i].ID); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// DeleteSnapshot removes the snapshot row with id. Live children are
// FailedPrecondition naming them.
func (s *Store) DeleteSnapshot(ctx context.Context, id string) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		kids, err := snapshotChildren(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(kids) > 0 {
			return api.FailedPrecondition("snapshot is in use by vm(s) %s, started from it", strings.Join(kids, ", ")).
				WithFix("delete those vms first").WithAction("vm delete", kids...)
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
		return err
	})
}

// SnapshotChildren returns the names of the VMs started from snapshot id.
func (s *Store) SnapshotChildren(ctx context.Context, id string) ([]string, error) {
	return snapshotChildren(ctx, s.db, id)
}

func snapshotChildren(ctx context.Context, q querier, id string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT v.name FROM vm_origins o JOIN vms v ON v.id = o.vm_id
		WHERE o.snapshot_id = ? ORDER BY v.name`, id)
}

// SetVMOrigin records that the VM with vmID was started from snapshot
// snapID.
func (s *Store) SetVMOrigin(ctx context.Context, vmID, snapID string) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT OR REPLACE INTO vm_origins (vm_id, snapshot_id) VALUES (?, ?)`, vmID, snapID)
		if isForeignKeyViolation(err) {
			return vmNotFound(vmID)
		}
		return err
	})
}

// vmOrigins maps VM ids to the name of the snapshot they came from (all
// when id is "").
func vmOrigins(ctx context.Context, q querier, id string) (map[string]string, error) {
	query := `SELECT o.vm_id, COALESCE(s.name, '') FROM vm_origins o LEFT JOIN snapshots s ON s.id = o.snapshot_id`
	var args []any
	if id != "" {
		query += ` WHERE o.vm_id = ?`
		args = append(args, id)
	}
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("reading vm origins: %w", err)
	}
	defer rows.Close()
	out := map[string]string{}
	for rows.Next() {
		var v, n string
		if err := rows.Scan(&v, &n); err != nil {
			return nil, err
		}
		out[v] = n
	}
	return out, rows.Err()
}

// snapshotsOfImage returns the names of the snapshots of image id.
func snapshotsOfImage(ctx context.Context, q querier, id string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT name FROM snapshots WHERE image_id = ? ORDER BY name`, id)
}
