package files

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"path/filepath"
	"strings"

	"banger/internal/agent"
	"banger/internal/api"
)

// Dialer opens a stream that speaks the guest agent's exec protocol: the
// daemon's exec upgrade (client.Exec) or an agent stream (agent.Client).
type Dialer = func(ctx context.Context) (net.Conn, error)

// maxTrailer bounds what is read after a tar's end marker (GNU tar pads
// to 10 KiB records).
const maxTrailer = 1 << 20

// maxStderr bounds the guest's error text kept for a message.
const maxStderr = 8 << 10

// run runs argv in the guest with stdin and stdout; its stderr is returned
// (bounded) for messages.
func run(ctx context.Context, dial Dialer, argv []string, stdin io.Reader, stdout io.Writer) (int, string, error) {
	conn, err := dial(ctx)
	if err != nil {
		return -1, "", err
	}
	var stderr capped
	code, err := agent.Exec(ctx, conn, api.ExecRequest{Argv: argv, Dir: "/root"}, stdin, stdout, &stderr)
	return code, strings.TrimSpace(stderr.String()), err
}

// capped keeps the first maxStderr bytes written to it.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if room := maxStderr - c.Len(); room > 0 {
		c.Buffer.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

// probeScript says what a guest path is: "dir", "other" (exists, not a
// directory), "parent" (missing, its directory exists) or "missing".
const probeScript = `if [ -d "$1" ] && [ ! -L "$1" ]; then echo dir; elif [ -e "$1" ] || [ -L "$1" ]; then echo other; ` +
	`elif [ -d "$(dirname -- "$1")" ]; then echo parent; else echo missing; fi`

func probe(ctx context.Context, dial Dialer, p string) (string, error) {
	var out capped
	code, stderr, err := run(ctx, dial, []string{"sh", "-c", probeScript, "sh", p}, nil, &out)
	if err != nil {
		return "", err
	}
	if code != 0 {
		return "", fmt.Errorf("looking at %s in the guest: exit %d: %s", p, code, stderr)
	}
	return strings.TrimSpace(out.String()), nil
}

// guestPath cleans a guest path; relative ones are under /root.
func guestPath(p string) (string, error) {
	if p == "" || strings.IndexByte(p, 0) >= 0 {
		return "", api.Invalid("guest path %q is empty or has a NUL byte", p)
	}
	if !path.IsAbs(p) {
		p = "/root/" + p
	}
	return path.Clean(p), nil
}

// CopyOut copies the guest's file or tree src to the host path dst: into
// dst when it is a directory, else as dst (its directory must exist).
func CopyOut(ctx context.Context, dial Dialer, src, dst string, lim Limits) (Stats, error) {
	src, err := guestPath(src)
	if err != nil {
		return Stats{}, err
	}
	if src == "/" {
		return Stats{}, api.Invalid("copying the guest's whole root is not supported").WithFix("copy a directory under /")
	}
	dir, as, err := hostTarget(dst, path.Base(src))
	if err != nil {
		return Stats{}, err
	}
	kind, err := probe(ctx, dial, src)
	if err != nil {
		return Stats{}, err
	}
	if kind == "parent" || kind == "missing" {
		return Stats{}, api.NotFound("no %s in the guest", src).WithFix("check the path with banger vm exec VM -- ls")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	type result struct {
		code   int
		stderr string
		err    error
	}
	done := make(chan result, 1)
	go func() {
		code, stderr, err := run(ctx, dial, []string{"tar", "-C", path.Dir(src), "-cf", "-", "--", path.Base(src)}, nil, pw)
		pw.CloseWithError(io.ErrUnexpectedEOF) // a tar cut short is an error, a complete one has ended already
		done <- result{code, stderr, err}
	}()
	st, xerr := Extract(pr, dir, path.Base(src), as, lim)
	if xerr == nil {
		// tar pads its archive to whole records after the end marker
		_, _ = io.Copy(io.Discard, io.LimitReader(pr, maxTrailer))
	}
	pr.CloseWithError(errors.New("extraction ended"))
	if xerr != nil {
		cancel()
	}
	res := <-done
	switch {
	case xerr != nil:
		return st, xerr
	case res.err != nil:
		return st, fmt.Errorf("running tar in the guest: %w", res.err)
	case res.code != 0:
		return st, fmt.Errorf("tar in the guest failed (exit %d): %s", res.code, res.stderr)
	}
	return st, nil
}

// hostTarget splits a host destination into an existing directory and the
// name to make in it.
func hostTarget(dst, base string) (string, string, error) {
	if dst == "" {
		return "", "", api.Invalid("empty host destination")
	}
	fi, err := os.Stat(dst)
	if err == nil && fi.IsDir() {
		return dst, base, nil
	}
	if err == nil || strings.HasSuffix(dst, "/") {
		if err != nil {
			return "", "", api.NotFound("host directory %s does not exist", dst).WithFix("create it first")
		}
	}
	parent := filepath.Dir(dst)
	if pfi, perr := os.Stat(parent); perr != nil || !pfi.IsDir() {
		return "", "", api.NotFound("host directory %s does not exist", parent).WithFix("create it first, or copy into an existing directory")
	}
	return parent, filepath.Base(dst), nil
}

// CopyIn copies the host file or tree src into the guest: into dst when it
// is a directory there, else as dst (its directory must exist).
func CopyIn(ctx context.Context, dial Dialer, src, dst string) (Stats, error) {
	dst, err := guestPath(dst)
	if err != nil {
		return Stats{}, err
	}
	if _, err := os.Lstat(src); err != nil {
		return Stats{}, api.NotFound("%s: %w", src, err).WithFix("check the host path")
	}
	kind, err := probe(ctx, dial, dst)
	if err != nil {
		return Stats{}, err
	}
	dir, name := dst, filepath.Base(filepath.Clean(src))
	switch kind {
	case "dir":
	case "other", "parent":
		dir, name = path.Dir(dst), path.Base(dst)
	default:
		return Stats{}, api.NotFound("no directory %s in the guest", path.Dir(dst)).WithFix("create it with banger vm exec VM -- mkdir -p " + path.Dir(dst))
	}
	pr, pw := io.Pipe()
	var st Stats
	var perr error
	packed := make(chan struct{})
	go func() {
		defer close(packed)
		st, perr = Pack(pw, src, name)
		pw.CloseWithError(perr)
	}()
	code, stderr, err := run(ctx, dial, []string{"tar", "-x", "-p", "-f", "-", "-C", dir}, pr, io.Discard)
	pr.Close()
	<-packed
	if perr != nil && !errors.Is(perr, io.ErrClosedPipe) {
		return st, perr
	}
	if err != nil {
		return st, fmt.Errorf("running tar in the guest: %w", err)
	}
	if code != 0 {
		return st, fmt.Errorf("tar in the guest failed (exit %d): %s", code, stderr)
	}
	return st, nil
}
