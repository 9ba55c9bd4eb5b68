// Package workspace puts a user's git working tree into a guest and brings
// the guest's changes back as a reviewed patch (`vm create --workspace`,
// `vm diff`, the MCP diff tool).
//
// Host side (this file, run by the CLI or the MCP server as the user, never
// by the daemon): Snapshot records the working tree — HEAD, uncommitted and
// untracked files (not ignored ones) — as a commit made with a temporary
// index (the user's index, working tree and branches are not touched) and
// keeps it under refs/banger/<vm>/base; Bundle packs it with the current
// branch. Apply turns a guest's patch into a commit on a new branch
// banger/<vm> on top of that base, again with a temporary index only: the
// current branch and working tree are never touched, so a dirty tree is no
// obstacle.
//
// What it trusts: not the patch. It comes from the guest (root in the VM,
// hostile): it is bounded (MaxPatch) and handed to `git apply --cached`,
// which refuses paths outside the tree (`..`, absolute) and inside .git,
// and writes only objects and the index; nothing is checked out.
package workspace

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/names"
)

// MaxPatch bounds a guest's patch (vm diff --max-size overrides).
const MaxPatch = 64 << 20

// Repo is a git repository on the host.
type Repo struct {
	Dir string // the top of its working tree
}

// Open finds the repository holding dir. A directory outside any git
// repository is a clear error (banger does not make one up).
func Open(ctx context.Context, dir string) (Repo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Repo{}, err
	}
	if st, err := os.Stat(abs); err != nil || !st.IsDir() {
		return Repo{}, api.Invalid("workspace %s is not a directory", dir).WithFix("pass a git repository's directory")
	}
	out, err := git(ctx, abs, nil, nil, "rev-parse", "--show-toplevel")
	if err != nil {
		return Repo{}, api.Invalid("%s is not in a git repository", abs).
			WithFix("run git init, git add -A and git commit there first, or pass a repository's directory")
	}
	return Repo{Dir: strings.TrimSpace(out)}, nil
}

// BaseRef is the ref that keeps a VM's workspace base in the repository.
func BaseRef(vm string) string { return "refs/banger/" + vm + "/base" }

// Branch is the branch Apply makes for a VM's changes.
func Branch(vm string) string { return "banger/" + vm }

// Snapshot commits the working tree as it is (tracked changes and untracked
// files, .gitignore respected) with a temporary index, on top of HEAD when
// there is one, and points BaseRef(vm) at it. It returns the commit and the
// current branch ("" when HEAD is detached or unborn).
func (r Repo) Snapshot(ctx context.Context, vm string) (commit, branch string, err error) {
	if err := names.Validate(vm); err != nil {
		return "", "", err
	}
	idx, cleanup, err := tempIndex()
	if err != nil {
		return "", "", err
	}
	defer cleanup()
	env := []string{"GIT_INDEX_FILE=" + idx}
	head, herr := git(ctx, r.Dir, nil, nil, "rev-parse", "--verify", "-q", "HEAD^{commit}")
	head = strings.TrimSpace(head)
	if herr == nil && head != "" {
		if _, err := git(ctx, r.Dir, env, nil, "read-tree", head); err != nil {
			return "", "", err
		}
	}
	if _, err := git(ctx, r.Dir, env, nil, "add", "-A", "--", "."); err != nil {
		return "", "", err
	}
	tree, err := git(ctx, r.Dir, env, nil, "write-tree")
	if err != nil {
		return "", "", err
	}
	args := []string{"commit-tree", strings.TrimSpace(tree), "-m", "banger: the working tree given to vm " + vm}
	if head != "" {
		args = append(args, "-p", head)
	}
	out, err := git(ctx, r.Dir, identityEnv(ctx, r.Dir), nil, args...)
	if err != nil {
		return "", "", err
	}
	commit = strings.TrimSpace(out)
	if _, err := git(ctx, r.Dir, nil, nil, "update-ref", BaseRef(vm), commit); err != nil {
		return "", "", err
	}
	if b, err := git(ctx, r.Dir, nil, nil, "symbolic-ref", "-q", "--short", "HEAD"); err == nil && head != "" {
		branch = strings.TrimSpace(b)
	}
	return commit, branch, nil
}

// Bundle writes a git bundle of BaseRef(vm) and branch (when not "") to w:
// the history the guest clones.
func (r Repo) Bundle(ctx context.Context, vm, branch string, w io.Writer) error {
	dir, err := os.MkdirTemp("", "banger-bundle-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	f := filepath.Join(dir, "ws.bundle")
	refs := []string{BaseRef(vm)}
	if branch != "" {
		refs = append(refs, "refs/heads/"+branch)
	}
	if _, err := git(ctx, r.Dir, nil, nil, append([]string{"bundle", "create", "-q", f}, refs...)...); err != nil {
		return err
	}
	b, err := os.Open(f)
	if err != nil {
		return err
	}
	defer b.Close()
	_, err = io.Copy(w, b)
	return err
}

// Base returns the commit BaseRef(vm) points at.
func (r Repo) Base(ctx context.Context, vm string) (string, error) {
	if err := names.Validate(vm); err != nil {
		return "", err
	}
	out, err := git(ctx, r.Dir, nil, nil, "rev-parse", "--verify", "-q", BaseRef(vm)+"^{commit}")
	if err != nil {
		return "", api.NotFound("repository %s has no workspace of vm %s (%s)", r.Dir, vm, BaseRef(vm)).
			WithFix("run vm diff in the repository given to --workspace, or pass --repo DIR")
	}
	return strings.TrimSpace(out), nil
}

// Applied is what Apply made.
type Applied struct {
	Branch string `json:"branch"`
	Commit string `json:"commit"`
	Files  int    `json:"files"`
}

// Apply commits patch on top of the VM's base, with a temporary index, as
// the new branch Branch(vm). An empty patch makes nothing (zero Applied).
// A branch that exists, a patch that does not apply, or one touching paths
// outside the tree are errors; the working tree, the index and the current
// branch are never touched.
func (r Repo) Apply(ctx context.Context, vm string, patch []byte) (Applied, error) {
	base, err := r.Base(ctx, vm)
	if err != nil {
		return Applied{}, err
	}
	branch := Branch(vm)
	if _, err := git(ctx, r.Dir, nil, nil, "rev-parse", "--verify", "-q", "refs/heads/"+branch); err == nil {
		return Applied{}, api.AlreadyExists("branch %s already exists in %s", branch, r.Dir).
			WithFix("delete it (git branch -D " + branch + ") or merge it first")
	}
	if len(bytes.TrimSpace(patch)) == 0 {
		return Applied{}, nil
	}
	idx, cleanup, err := tempIndex()
	if err != nil {
		return Applied{}, err
	}
	defer cleanup()
	env := []string{"GIT_INDEX_FILE=" + idx}
	if _, err := git(ctx, r.Dir, env, nil, "read-tree", base); err != nil {
		return Applied{}, err
	}
	if _, err := git(ctx, r.Dir, env, bytes.NewReader(patch), "apply", "--cached", "--binary", "--whitespace=nowarn", "-"); err != nil {
		return Applied{}, api.FailedPrecondition("the guest's patch does not apply to its base %.12s: %w", base, err).
			WithFix("look at the patch with banger vm diff " + vm)
	}
	tree, err := git(ctx, r.Dir, env, nil, "write-tree")
	if err != nil {
		return Applied{}, err
	}
	out, err := git(ctx, r.Dir, identityEnv(ctx, r.Dir), nil, "commit-tree", strings.TrimSpace(tree), "-p", base, "-m", "banger: changes made in vm "+vm)
	if err != nil {
		return Applied{}, err
	}
	commit := strings.TrimSpace(out)
	// the empty old value: fail rather than move a branch made meanwhile
	if _, err := git(ctx, r.Dir, nil, nil, "update-ref", "refs/heads/"+branch, commit, ""); err != nil {
		return Applied{}, api.AlreadyExists("creating branch %s: %w", branch, err)
	}
	files, _ := git(ctx, r.Dir, nil, nil, "diff", "--name-only", base, commit)
	return Applied{Branch: branch, Commit: commit, Files: len(strings.Fields(files))}, nil
}

// identity lets commit-tree work where the user has no git identity set
// (see identityEnv).
var identity = []string{"GIT_AUTHOR_NAME=banger", "GIT_AUTHOR_EMAIL=banger@localhost",
	"GIT_COMMITTER_NAME=banger", "GIT_COMMITTER_EMAIL=banger@localhost"}

func tempIndex() (string, func(), error) {
	dir, err := os.MkdirTemp("", "banger-index-")
	if err != nil {
		return "", nil, err
	}
	return filepath.Join(dir, "index"), func() { os.RemoveAll(dir) }, nil
}

// git runs git in dir with extra environment and stdin; errors carry its
// stderr.
func git(ctx context.Context, dir string, env []string, stdin io.Reader, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = stdin
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return "", fmt.Errorf("git %s: %s", args[0], strings.TrimSpace(errb.String()))
		}
		if errors.Is(err, exec.ErrNotFound) {
			return "", api.FailedPrecondition("git not found").WithFix("sudo apt-get install git")
		}
		return "", fmt.Errorf("git %s: %w", args[0], err)
	}
	return out.String(), nil
}

// identityEnv fills in a committer for banger's commits where the user has
// none configured (the user's own identity is used when set).
func identityEnv(ctx context.Context, dir string) []string {
	if _, err := git(ctx, dir, nil, nil, "config", "user.email"); err == nil {
		return nil
	}
	return identity
}
