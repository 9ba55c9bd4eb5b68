// Package store keeps banger's durable state, images and VMs, in one SQLite
// database (modernc.org/sqlite, pure Go).
//
// Every pooled connection gets the same pragmas from the DSN: WAL journal,
// a 10 s busy timeout, foreign keys on, synchronous NORMAL, and transactions
// that begin IMMEDIATE so a writer takes the write lock up front instead of
// failing with SQLITE_BUSY half-way. Inside one process a write mutex
// serialises every mutation as well, so concurrent callers queue in Go
// rather than spin in SQLite's busy handler.
//
// The schema is built by numbered migrations (see migrations.go). VMHandles
// (pid, tap, loop devices) never go into SQLite.
package store

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"banger/internal/api"
)

// Store is an open banger database. It is safe for concurrent use.
type Store struct {
	db       *sql.DB
	path     string
	readOnly bool

	// writeMu serialises every mutation (and migrations). Helpers whose name
	// ends in Locked expect it to be held.
	writeMu sync.Mutex
}

// sqliteHeader is the first 16 bytes of every SQLite 3 database file.
var sqliteHeader = []byte("SQLite format 3\x00")

// Open opens the database at path, creating its directory (0700) and the file
// (0600) when missing, and applies the migrations this binary knows that are
// not applied yet. A file that is not a SQLite database is rejected without
// being touched.
func Open(ctx context.Context, path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("creating state directory for %s: %w", path, err)
	}
	if err := checkHeader(path); err != nil {
		return nil, err
	}
	if err := createFile(path); err != nil {
		return nil, err
	}
	litter := absentSidecars(path)
	s, err := open(ctx, path, false)
	if err == nil {
		err = s.checkBangerDB(ctx)
		if err == nil {
			err = s.migrate(ctx, migrations)
		}
		if err != nil {
			s.Close()
		}
	}
	if err != nil {
		removeFiles(litter)
		return nil, classify(path, err)
	}
	return s, nil
}

// OpenReadOnly opens an existing database read-only (mode=ro): it never
// creates the file and runs no migrations. Used by `banger doctor` and other
// readers that must not change the state.
func OpenReadOnly(ctx context.Context, path string) (*Store, error) {
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, api.NotFound("database %s does not exist", path).
				WithFix("start the daemon once (bangerd) to create it, or check state_dir in the config")
		}
		return nil, fmt.Errorf("checking database %s: %w", path, err)
	}
	if err := checkHeader(path); err != nil {
		return nil, err
	}
	s, err := open(ctx, path, true)
	if err != nil {
		return nil, classify(path, err)
	}
	return s, nil
}

// Close closes the database.
func (s *Store) Close() error {
	return s.db.Close()
}

func dsn(path string, readOnly bool) string {
	// SQLite decodes %HH escapes in file: URIs; escape what would end the path.
	p := strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(path)
	if readOnly {
		return "file:" + p + "?mode=ro&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
	}
	return "file:" + p + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)" +
		"&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
}

func open(ctx context.Context, path string, readOnly bool) (*Store, error) {
	db, err := sql.Open("sqlite", dsn(path, readOnly))
	if err != nil {
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("opening database %s: %w", path, err)
	}
	return &Store{db: db, path: path, readOnly: readOnly}, nil
}

// checkHeader rejects a non-empty file that does not start with the SQLite
// header, before SQLite gets a chance to write anything next to it.
func checkHeader(path string) error {
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("opening database %s: %w", path, err)
	}
	defer f.Close()
	head := make([]byte, len(sqliteHeader))
	n, err := io.ReadFull(f, head)
	if n == 0 && errors.Is(err, io.EOF) {
		return nil // empty file: SQLite initialises it
	}
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("reading database %s: %w", path, err)
	}
	if !bytes.Equal(head[:n], sqliteHeader) || n < len(sqliteHeader) {
		return corruptErr(path, errors.New("no SQLite header"))
	}
	return nil
}

func corruptErr(path string, cause error) error {
	return api.FailedPrecondition("database %s is corrupt or not a banger database: %w", path, cause).
		WithFix(fmt.Sprintf("stop bangerd and move it aside (mv %s %s.broken); bangerd creates a fresh one", path, path))
}

// classify turns SQLite's "not a database" and corruption codes into the
// corrupt-database error with its fix.
func classify(path string, err error) error {
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() & 0xff {
		case sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT:
			return corruptErr(path, err)
		}
	}
	return err
}

func createFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("creating database %s: %w", path, err)
	}
	return f.Close()
}

// absentSidecars lists the -wal/-shm files that do not exist yet, so a
// failed Open can remove what it created.
func absentSidecars(path string) []string {
	var out []string
	for _, suffix := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Lstat(path + suffix); errors.Is(err, os.ErrNotExist) {
			out = append(out, path+suffix)
		}
	}
	return out
}

func removeFiles(paths []string) {
	for _, p := range paths {
		os.Remove(p)
	}
}

// checkBangerDB rejects a valid SQLite database that holds tables but no
// schema_migrations: it belongs to something else.
func (s *Store) checkBangerDB(ctx context.Context) error {
	var tables, ours int
	err := s.db.QueryRowContext(ctx, `SELECT count(*), count(*) FILTER (WHERE name = 'schema_migrations')
		FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`).Scan(&tables, &ours)
	if err != nil {
		return fmt.Errorf("reading schema of %s: %w", s.path, err)
	}
	if tables > 0 && ours == 0 {
		return corruptErr(s.path, errors.New("it has tables but no schema_migrations"))
	}
	return nil
}

// newID returns a random 16-byte hex ID.
func newID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return hex.EncodeToString(b[:])
}

// now is the store's clock, truncated to microseconds so times survive the
// round trip through TEXT unchanged.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

const timeFormat = time.RFC3339Nano

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeFormat)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(timeFormat, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("parsing stored time %q: %w", s, err)
	}
	return t, nil
}

// isUniqueViolation reports whether err is a UNIQUE or PRIMARY KEY failure.
func isUniqueViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) &&
		(se.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// isForeignKeyViolation reports whether err is a FOREIGN KEY failure.
func isForeignKeyViolation(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// writeTx runs fn in one IMMEDIATE transaction while holding the write mutex.
func (s *Store) writeTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	if s.readOnly {
		return api.FailedPrecondition("database %s is open read-only", s.path)
	}
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	return s.writeTxLocked(ctx, fn)
}

func (s *Store) writeTxLocked(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("beginning transaction: %w", err)
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("committing transaction: %w", err)
	}
	return nil
}

// timeField lets scanners parse stored times in a loop.
type timeField time.Time

func (f *timeField) set(s string) error {
	t, err := parseTime(s)
	*f = timeField(t)
	return err
}
