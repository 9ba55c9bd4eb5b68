package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"banger/internal/api"
)

const imageColumns = `id, name, fingerprint, parent, managed, source, kernel_version, dir, kernel, vmlinux,
	initrd, rootfs, work_seed, kernel_size, vmlinux_size, initrd_size, rootfs_size, work_seed_size,
	engines, features, recipe, created_at`

// CreateImage inserts img, setting its ID and CreatedAt when empty. A taken
// name is AlreadyExists.
func (s *Store) CreateImage(ctx context.Context, img *api.Image) error {
	if img.Name == "" {
		return api.Invalid("image name is empty").WithFix("give the image a name")
	}
	rec := *img
	if rec.ID == "" {
		rec.ID = newID()
	}
	if rec.CreatedAt.IsZero() {
		rec.CreatedAt = now()
	}
	args, err := imageArgs(rec)
	if err != nil {
		return err
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		if taken, err := exists(ctx, tx, `SELECT count(*) FROM images WHERE name = ?`, rec.Name); err != nil || taken {
			if taken {
				return imageExists(rec.Name)
			}
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO images (`+imageColumns+`)
			VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)`, args...)
		if isUniqueViolation(err) {
			return api.AlreadyExists("image id %s already exists: %w", rec.ID, err)
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("creating image %s: %w", rec.Name, err)
	}
	*img = rec
	return nil
}

func imageExists(name string) error {
	return api.AlreadyExists("image %q already exists", name).
		WithFix("pick another name, or delete it first").WithAction("image delete", name)
}

func imageNotFound(nameOrID string) error {
	return api.NotFound("image %q not found", nameOrID).WithAction("image list")
}

// GetImage returns the image with that name or ID.
func (s *Store) GetImage(ctx context.Context, nameOrID string) (api.Image, error) {
	return getByNameOrID(ctx, s.db, "images", imageColumns, nameOrID, scanImage, imageNotFound)
}

// getByNameOrID reads the row of table whose name (first) or id is
// nameOrID; none is notFound(nameOrID).
func getByNameOrID[T any](ctx context.Context, q querier, table, columns, nameOrID string,
	scan func(scanner) (T, error), notFound func(string) error) (T, error) {
	row := q.QueryRowContext(ctx, `SELECT `+columns+` FROM `+table+` WHERE name = ?1 OR id = ?1
		ORDER BY name = ?1 DESC LIMIT 1`, nameOrID)
	v, err := scan(row)
	var zero T
	if errors.Is(err, sql.ErrNoRows) {
		return zero, notFound(nameOrID)
	}
	if err != nil {
		return zero, fmt.Errorf("reading %s %s: %w", strings.TrimSuffix(table, "s"), nameOrID, err)
	}
	return v, nil
}

// ListImages returns every image, ordered by name.
func (s *Store) ListImages(ctx context.Context) ([]api.Image, error) {
	return queryAll(ctx, s.db, "listing images", scanImage, `SELECT `+imageColumns+` FROM images ORDER BY name`)
}

// UpdateImage overwrites the record with img.ID. A missing ID is NotFound; a
// rename onto a taken name is AlreadyExists.
func (s *Store) UpdateImage(ctx context.Context, img api.Image) error {
	args, err := imageArgs(img)
	if err != nil {
		return err
	}
	cols := strings.Split(strings.Join(strings.Fields(imageColumns), ""), ",")
	var set []string
	for _, c := range cols[1:] {
		set = append(set, c+" = ?")
	}
	err = s.writeTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE images SET `+strings.Join(set, ", ")+` WHERE id = ?`,
			append(args[1:], img.ID)...)
		if isUniqueViolation(err) {
			return imageExists(img.Name)
		}
		if err != nil {
			return err
		}
		return mustAffect(res, imageNotFound(img.ID))
	})
	if err != nil {
		return fmt.Errorf("updating image %s: %w", img.Name, err)
	}
	return nil
}

// DeleteImage deletes the image with that name or ID. An image that VMs use
// is FailedPrecondition naming them.
func (s *Store) DeleteImage(ctx context.Context, nameOrID string) error {
	return s.writeTx(ctx, func(tx *sql.Tx) error {
		var id, name string
		err := tx.QueryRowContext(ctx, `SELECT id, name FROM images WHERE name = ?1 OR id = ?1
			ORDER BY name = ?1 DESC LIMIT 1`, nameOrID).Scan(&id, &name)
		if errors.Is(err, sql.ErrNoRows) {
			return imageNotFound(nameOrID)
		}
		if err != nil {
			return fmt.Errorf("reading image %s: %w", nameOrID, err)
		}
		users, err := vmsUsingImage(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(users) > 0 {
			return imageInUse(name, users)
		}
		snaps, err := snapshotsOfImage(ctx, tx, id)
		if err != nil {
			return err
		}
		if len(snaps) > 0 {
			return api.FailedPrecondition("image %q has snapshot(s) %s", name, strings.Join(snaps, ", ")).
				WithFix("delete them first (banger snapshot delete; banger image unwarm for its warm snapshot)").
				WithAction("snapshot list")
		}
		_, err = tx.ExecContext(ctx, `DELETE FROM images WHERE id = ?`, id)
		if isForeignKeyViolation(err) {
			return api.FailedPrecondition("image %q is in use by a vm: %w", name, err).WithAction("vm list")
		}
		if err != nil {
			return fmt.Errorf("deleting image %s: %w", name, err)
		}
		return nil
	})
}

func imageInUse(name string, vms []string) error {
	return api.FailedPrecondition("image %q is in use by vm(s) %s", name, strings.Join(vms, ", ")).
		WithFix("delete those vms first").WithAction("vm delete", vms...)
}

// VMsUsingImage returns the names of the VMs built from imageID, sorted.
func (s *Store) VMsUsingImage(ctx context.Context, imageID string) ([]string, error) {
	return vmsUsingImage(ctx, s.db, imageID)
}

type querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func vmsUsingImage(ctx context.Context, q querier, imageID string) ([]string, error) {
	return queryStrings(ctx, q, `SELECT name FROM vms WHERE image_id = ? ORDER BY name`, imageID)
}

// ImageChildren returns the names of the images whose Parent is name, sorted.
func (s *Store) ImageChildren(ctx context.Context, name string) ([]string, error) {
	return queryStrings(ctx, s.db, `SELECT name FROM images WHERE parent = ? ORDER BY name`, name)
}

func queryStrings(ctx context.Context, q querier, query string, args ...any) ([]string, error) {
	return queryAll(ctx, q, "querying", scanOne[string], query, args...)
}

// queryAll runs query and returns each row as scan reads it; its errors
// begin with what.
func queryAll[T any](ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, what string, scan func(scanner) (T, error), query string, args ...any) ([]T, error) {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer rows.Close()
	var out []T
	for rows.Next() {
		v, err := scan(rows)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// scanOne reads a row of one column.
func scanOne[T any](sc scanner) (T, error) {
	var v T
	err := sc.Scan(&v)
	return v, err
}

func exists(ctx context.Context, q querier, query string, args ...any) (bool, error) {
	var n int
	if err := q.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

func mustAffect(res sql.Result, notFound error) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return notFound
	}
	return nil
}

func imageArgs(img api.Image) ([]any, error) {
	engines, err := json.Marshal(nonNil(img.Engines))
	if err != nil {
		return nil, err
	}
	features, err := json.Marshal(nonNil(img.Features))
	if err != nil {
		return nil, err
	}
	return []any{img.ID, img.Name, img.Fingerprint, img.Parent, img.Managed, img.Source, img.KernelVersion,
		img.Dir, img.Kernel, img.Vmlinux, img.Initrd, img.Rootfs, img.WorkSeed, img.KernelSize, img.VmlinuxSize,
		img.InitrdSize, img.RootfsSize, img.WorkSeedSize, string(engines), string(features), img.Recipe,
		fmtTime(img.CreatedAt)}, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

type scanner interface{ Scan(dest ...any) error }

func scanImage(sc scanner) (api.Image, error) {
	var img api.Image
	var engines, features, created string
	err := sc.Scan(&img.ID, &img.Name, &img.Fingerprint, &img.Parent, &img.Managed, &img.Source,
		&img.KernelVersion, &img.Dir, &img.Kernel, &img.Vmlinux, &img.Initrd, &img.Rootfs, &img.WorkSeed,
		&img.KernelSize, &img.VmlinuxSize, &img.InitrdSize, &img.RootfsSize, &img.WorkSeedSize,
		&engines, &features, &img.Recipe, &created)
	if err != nil {
		return api.Image{}, err
	}
	if img.Engines, err = decodeList(engines); err != nil {
		return api.Image{}, fmt.Errorf("image %s engines: %w", img.Name, err)
	}
	if img.Features, err = decodeList(features); err != nil {
		return api.Image{}, fmt.Errorf("image %s features: %w", img.Name, err)
	}
	if img.CreatedAt, err = parseTime(created); err != nil {
		return api.Image{}, err
	}
	return img, nil
}

// decodeList decodes a stored JSON list; an empty list reads back as nil.
func decodeList(s string) ([]string, error) {
	var out []string
	if err := json.Unmarshal([]byte(s), &out); err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, nil
	}
	return out, nil
}
