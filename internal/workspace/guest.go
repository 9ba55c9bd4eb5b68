package workspace

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"

	"banger/internal/agent"
	"banger/internal/api"
)

// GuestDir is where the workspace lives in the guest.
const GuestDir = "/root/work"

// GuestBaseRef records the base in the guest, for views that have no
// host repository (the web UI); the host's own record is BaseRef.
const GuestBaseRef = "refs/banger/base"

// GuestBranch is the branch checked out in the guest: the snapshot commit
// (the user's HEAD plus their uncommitted and untracked files).
const GuestBranch = "banger/workspace"

// Dialer opens a stream speaking the guest agent's exec protocol.
type Dialer = func(ctx context.Context) (net.Conn, error)

var commitRE = regexp.MustCompile(`^[0-9a-f]{40}([0-9a-f]{24})?$`)

// pushScript fetches the bundle read on stdin into a new repository at
// GuestDir, makes the user's branch ($2, may be empty) and checks out
// GuestBranch at the base commit ($1). The repository is fresh: no hooks
// but git's samples.
const pushScript = `set -e
b=$(mktemp /tmp/banger-ws.XXXXXX)
trap 'rm -f "$b"' EXIT
cat > "$b"
if [ -e ` + GuestDir + ` ]; then echo "` + GuestDir + ` already exists" >&2; exit 3; fi
git init -q ` + GuestDir + `
cd ` + GuestDir + `
git fetch -q "$b" "+refs/*:refs/banger-bundle/*"
git checkout -q -b ` + GuestBranch + ` "$1"
git update-ref ` + GuestBaseRef + ` "$1"
if [ -n "$2" ]; then git branch -q -f "$2" "refs/banger-bundle/heads/$2"; fi
git for-each-ref --format='%(refname)' refs/banger-bundle/ | while read -r r; do git update-ref -d "$r"; done
`

// Push puts the repository's snapshot for vm into the guest at GuestDir.
func Push(ctx context.Context, dial Dialer, r Repo, vm string) (base string, err error) {
	base, branch, err := r.Snapshot(ctx, vm)
	if err != nil {
		return "", err
	}
	var bundle bytes.Buffer
	if err := r.Bundle(ctx, vm, branch, &bundle); err != nil {
		return "", err
	}
	var stderr capped
	code, err := run(ctx, dial, []string{"sh", "-c", pushScript, "sh", base, branch}, &bundle, io.Discard, &stderr)
	if err != nil {
		return "", fmt.Errorf("copying the workspace into vm %s: %w", vm, err)
	}
	if code != 0 {
		return "", api.FailedPrecondition("setting up %s in vm %s failed (exit %d): %s", GuestDir, vm, code, stderr.String()).
			WithFix("the image needs git; a VM takes one workspace")
	}
	return base, nil
}

// diffScript prints, as a binary git patch, every change in GuestDir since
// the base commit ($1, or GuestBaseRef when empty): committed or not,
// untracked files included. A temporary index leaves the guest's own
// index alone; external diff drivers and textconv are off.
const diffScript = `set -e
cd ` + GuestDir + `
base=${1:-$(git rev-parse -q --verify ` + GuestBaseRef + `)}
GIT_INDEX_FILE=$(mktemp -u /tmp/banger-index.XXXXXX)
export GIT_INDEX_FILE
trap 'rm -f "$GIT_INDEX_FILE"' EXIT
git read-tree HEAD
git add -A >/dev/null
git -c core.quotePath=false diff --cached --binary --full-index --no-ext-diff --no-textconv --no-renames "$base" --
`

// Diff returns the guest's changes since base, at most max bytes (a larger
// patch is an error naming the limit). An empty base takes the guest's own
// record (GuestBaseRef): for a read-only view only, since the guest may
// have moved it.
func Diff(ctx context.Context, dial Dialer, base string, max int64) ([]byte, error) {
	if base != "" && !commitRE.MatchString(base) {
		return nil, api.Invalid("workspace base %q is not a commit id", base)
	}
	if max <= 0 {
		max = MaxPatch
	}
	out := &limited{max: max}
	var stderr capped
	code, err := run(ctx, dial, []string{"sh", "-c", diffScript, "sh", base}, nil, out, &stderr)
	if out.over {
		return nil, api.FailedPrecondition("the guest's patch is larger than %d bytes", max).
			WithFix("raise --max-size, or copy the files out with banger vm cp")
	}
	if err != nil {
		return nil, err
	}
	if code != 0 {
		return nil, api.FailedPrecondition("git diff in the guest failed (exit %d): %s", code, stderr.String()).
			WithFix("the VM needs the workspace at " + GuestDir + " (vm create --workspace DIR)")
	}
	return out.buf.Bytes(), nil
}

func run(ctx context.Context, dial Dialer, argv []string, stdin io.Reader, stdout, stderr io.Writer) (int, error) {
	conn, err := dial(ctx)
	if err != nil {
		return -1, err
	}
	return agent.Exec(ctx, conn, api.ExecRequest{Argv: argv, Dir: "/root"}, stdin, stdout, stderr)
}

// limited keeps up to max bytes and notes more.
type limited struct {
	buf  bytes.Buffer
	max  int64
	over bool
}

func (l *limited) Write(p []byte) (int, error) {
	if room := l.max - int64(l.buf.Len()); int64(len(p)) > room {
		l.buf.Write(p[:max(room, 0)])
		l.over = true
		return len(p), nil
	}
	return l.buf.Write(p)
}

// capped keeps the first 8 KiB of a guest's error text.
type capped struct{ b strings.Builder }

func (c *capped) Write(p []byte) (int, error) {
	if room := 8<<10 - c.b.Len(); room > 0 {
		c.b.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (c *capped) String() string { return strings.ToValidUTF8(strings.TrimSpace(c.b.String()), "?") }
