package store

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"banger/internal/api"
)

// openAt opens a database applying only the first n known migrations, as an
// older banger would have left it.
func openAt(t *testing.T, path string, n int) *Store {
	t.Helper()
	ctx := context.Background()
	if err := createFile(path); err != nil {
		t.Fatal(err)
	}
	s, err := open(ctx, path, false)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.migrate(ctx, migrations[:n]); err != nil {
		s.Close()
		t.Fatalf("migrating to level %d: %v", n, err)
	}
	return s
}

func TestRunMigrationsIgnoresUnknownAppliedIDs(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	// A newer banger applied migration 1 and its own 9001; this binary's 2 and
	// 3 are not there yet (as if the newer binary had numbered differently).
	s := openAt(t, path, 1)
	if _, err := s.db.ExecContext(ctx, `INSERT INTO schema_migrations (id, name, applied_at)
		VALUES (9001, 'from the future', '2099-01-01T00:00:00Z')`); err != nil {
		t.Fatal(err)
	}
	s.Close()

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open on a db with an unknown migration: %v", err)
	}
	defer s.Close()
	info, err := s.SchemaInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var applied []int
	for _, m := range migrations {
		applied = append(applied, m.id)
	}
	want := SchemaInfo{Current: latestID(), Latest: latestID(), Applied: append(applied, 9001), Unknown: []int{9001}}
	if fmt.Sprint(info) != fmt.Sprint(want) {
		t.Errorf("SchemaInfo = %+v, want %+v", info, want)
	}
	var name string
	if err := s.db.QueryRowContext(ctx, `SELECT name FROM schema_migrations WHERE id = 9001`).Scan(&name); err != nil || name != "from the future" {
		t.Errorf("row 9001 = %q, %v; want it left alone", name, err)
	}
	ok, err := columnExistsDB(ctx, s.db, "vms", "metrics_path")
	if err != nil || !ok {
		t.Errorf("migration 2 not applied: metrics_path exists = %v, %v", ok, err)
	}
}

func columnExistsDB(ctx context.Context, db *sql.DB, table, col string) (bool, error) {
	var n int
	err := db.QueryRowContext(ctx, `SELECT count(*) FROM pragma_table_info(?) WHERE name = ?`, table, col).Scan(&n)
	return n > 0, err
}

func TestDropColumnIfExistsIsIdempotent(t *testing.T) {
	ctx := context.Background()
	s := openAt(t, filepath.Join(t.TempDir(), "banger.db"), 2)
	defer s.Close()
	for i := range 2 {
		err := s.writeTx(ctx, func(tx *sql.Tx) error { return migrateHandlesOut(ctx, tx) })
		if err != nil {
			t.Fatalf("run %d of the drop migration: %v", i+1, err)
		}
		for _, col := range []string{"pid", "tap"} {
			if ok, err := columnExistsDB(ctx, s.db, "vms", col); err != nil || ok {
				t.Fatalf("after run %d: vms.%s exists = %v, %v; want dropped", i+1, col, ok, err)
			}
		}
	}
	// And a column that never existed is no error.
	err := s.writeTx(ctx, func(tx *sql.Tx) error { return dropColumnIfExists(ctx, tx, "vms", "never_there") })
	if err != nil {
		t.Fatalf("dropping a missing column: %v", err)
	}
}

var spaceRe = regexp.MustCompile(`\s+`)

// schemaOf returns a normalized description of every table and index:
// sqlite_master SQL with whitespace collapsed, plus pragma table_info rows.
func schemaOf(t *testing.T, db *sql.DB) []string {
	t.Helper()
	ctx := context.Background()
	rows, err := db.QueryContext(ctx, `SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master
		WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name`)
	if err != nil {
		t.Fatal(err)
	}
	var out, tables []string
	for rows.Next() {
		var typ, name, tbl, text string
		if err := rows.Scan(&typ, &name, &tbl, &text); err != nil {
			t.Fatal(err)
		}
		text = spaceRe.ReplaceAllString(text, " ")
		text = strings.NewReplacer("( ", "(", " )", ")", " ,", ",").Replace(text)
		out = append(out, fmt.Sprintf("%s %s on %s: %s", typ, name, tbl, text))
		if typ == "table" {
			tables = append(tables, name)
		}
	}
	rows.Close()
	for _, tbl := range tables {
		cols, err := db.QueryContext(ctx, `SELECT cid, name, type, "notnull", coalesce(dflt_value, ''), pk FROM pragma_table_info(?)`, tbl)
		if err != nil {
			t.Fatal(err)
		}
		for cols.Next() {
			var cid, notnull, pk int
			var name, typ, dflt string
			if err := cols.Scan(&cid, &name, &typ, &notnull, &dflt, &pk); err != nil {
				t.Fatal(err)
			}
			out = append(out, fmt.Sprintf("column %s.%d %s %s notnull=%d default=%s pk=%d", tbl, cid, name, typ, notnull, dflt, pk))
		}
		cols.Close()
	}
	return out
}

func TestFreshAndUpgradedSchemasMatch(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	fresh, err := Open(ctx, filepath.Join(dir, "fresh.db"))
	if err != nil {
		t.Fatal(err)
	}
	want := schemaOf(t, fresh.db)
	fresh.Close()

	for level := 1; level < len(migrations); level++ {
		t.Run(fmt.Sprintf("from-%d", level), func(t *testing.T) {
			path := filepath.Join(dir, fmt.Sprintf("level%d.db", level))
			old := openAt(t, path, level)
			// Upgrade with data in place, as a real user would.
			if _, err := old.db.ExecContext(ctx, `INSERT INTO images (id, name, created_at) VALUES ('i1', 'base', '2024-01-01T00:00:00Z')`); err != nil {
				t.Fatal(err)
			}
			if _, err := old.db.ExecContext(ctx, `INSERT INTO vms (id, name, image_id, vcpus, memory_mib, disk_bytes,
				created_at, updated_at, state, guest_ip, mac, vsock_cid, engine)
				VALUES ('v1', 'old-vm', 'i1', 2, 1024, 1, '2024-01-01T00:00:00Z', '2024-01-01T00:00:00Z',
				'stopped', '10.0.0.2', '02:42:0a:00:00:02', 3, 'firecracker')`); err != nil {
				t.Fatal(err)
			}
			old.Close()

			s, err := Open(ctx, path)
			if err != nil {
				t.Fatalf("upgrading from level %d: %v", level, err)
			}
			defer s.Close()
			if got := schemaOf(t, s.db); !slices.Equal(got, want) {
				t.Errorf("schema after upgrade from %d differs from fresh:\n got: %s\nwant: %s",
					level, strings.Join(got, "\n      "), strings.Join(want, "\n      "))
			}
			vm, err := s.GetVM(ctx, "old-vm")
			if err != nil {
				t.Fatalf("vm written at level %d unreadable after upgrade: %v", level, err)
			}
			if level < 2 && vm.Runtime.AgentTransport != "vsock-hybrid" {
				t.Errorf("migration 2 backfill: agent transport = %q, want vsock-hybrid", vm.Runtime.AgentTransport)
			}
		})
	}
}

func TestOpenRejectsCorruptDB(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"garbage", bytes.Repeat([]byte("not a database, just garbage. "), 200)},
		{"short garbage", []byte("xyz")},
		{"sqlite header then garbage", append([]byte("SQLite format 3\x00"), bytes.Repeat([]byte{0xff}, 8192)...)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "banger.db")
			if err := os.WriteFile(path, tt.data, 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(context.Background(), path)
			if err == nil {
				s.Close()
				t.Fatal("Open on a corrupt db succeeded")
			}
			if !strings.Contains(err.Error(), "corrupt or not a banger database") || !strings.Contains(err.Error(), "move it aside") {
				t.Errorf("error %q should say the db is corrupt and how to move it aside", err)
			}
			got, rerr := os.ReadFile(path)
			if rerr != nil || !bytes.Equal(got, tt.data) {
				t.Errorf("db file changed by the failed Open")
			}
			entries, _ := os.ReadDir(dir)
			if len(entries) != 1 {
				var names []string
				for _, e := range entries {
					names = append(names, e.Name())
				}
				t.Errorf("dir holds %v after a failed Open, want only banger.db", names)
			}
		})
	}
}

func TestOpenRejectsForeignSQLiteDB(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "other.db")
	s := openAt(t, path, 0)
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE notes (x TEXT)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.ExecContext(ctx, `DROP TABLE schema_migrations`); err != nil {
		t.Fatal(err)
	}
	s.Close()
	_, err := Open(ctx, path)
	if err == nil || !api.IsFailedPrecondition(err) || !strings.Contains(err.Error(), "not a banger database") {
		t.Fatalf("Open on a foreign db = %v, want FailedPrecondition 'not a banger database'", err)
	}
}

func TestOpenReadOnlyRejectsMissingDB(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "banger.db")
	s, err := OpenReadOnly(context.Background(), path)
	if err == nil {
		s.Close()
		t.Fatal("OpenReadOnly on a missing db succeeded")
	}
	if !api.IsNotFound(err) {
		t.Errorf("kind = %s, want NotFound", api.KindOf(err))
	}
	if _, err := os.Stat(filepath.Join(dir, "sub")); !os.IsNotExist(err) {
		t.Errorf("OpenReadOnly created %s", filepath.Join(dir, "sub"))
	}
}

func TestOpenReadOnlyReadsAndRefusesWrites(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, &api.Image{Name: "base"}); err != nil {
		t.Fatal(err)
	}
	// Keep the writer open, as a running daemon would.
	defer s.Close()

	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.GetImage(ctx, "base"); err != nil {
		t.Fatalf("read through read-only store: %v", err)
	}
	info, err := ro.SchemaInfo(ctx)
	if err != nil || info.Current != latestID() {
		t.Fatalf("SchemaInfo = %+v, %v", info, err)
	}
	if err := ro.CreateImage(ctx, &api.Image{Name: "other"}); err == nil {
		t.Fatal("write through read-only store succeeded")
	}
}

func TestOpenReadOnlyAfterWriterClosed(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateImage(ctx, &api.Image{Name: "base"}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if list, err := ro.ListImages(ctx); err != nil || len(list) != 1 {
		t.Fatalf("ListImages read-only = %v, %v", list, err)
	}
}
