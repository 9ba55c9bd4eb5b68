package workspace

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/api"
)

// These tests use the real git on real repositories; the guest's side
// (the scripts) runs here too, in a plain directory standing in for the
// guest's /root/work.

func gitT(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir}, args...)...)
	cmd.Env = append(os.Environ(), identity...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func write(t *testing.T, p, s string) {
	t.Helper()
	os.MkdirAll(filepath.Dir(p), 0o755)
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// userRepo is a repository with history, a dirty tracked file, an untracked
// file and an ignored one.
func userRepo(t *testing.T) Repo {
	t.Helper()
	if _, err := exec.LookPath("git"); err != nil {
		t.Fatal("git not found: sudo apt-get install git")
	}
	dir := t.TempDir()
	gitT(t, dir, "init", "-q", "-b", "main")
	write(t, filepath.Join(dir, "a.txt"), "one\n")
	write(t, filepath.Join(dir, ".gitignore"), "*.log\n")
	gitT(t, dir, "add", "-A")
	gitT(t, dir, "commit", "-q", "-m", "first")
	write(t, filepath.Join(dir, "a.txt"), "one\ntwo (uncommitted)\n")
	write(t, filepath.Join(dir, "new/untracked.txt"), "untracked\n")
	write(t, filepath.Join(dir, "debug.log"), "ignored\n")
	r, err := Open(context.Background(), filepath.Join(dir, "new"))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// state is what the user's repository looks like from git's side.
func state(t *testing.T, r Repo) string {
	return gitT(t, r.Dir, "status", "--porcelain") + "|" + gitT(t, r.Dir, "rev-parse", "HEAD") + "|" +
		gitT(t, r.Dir, "symbolic-ref", "HEAD") + "|" + gitT(t, r.Dir, "diff")
}

// guestClone runs pushScript's work locally: the bundle fetched into dir
// and the workspace branch checked out.
func guestClone(t *testing.T, r Repo, vm string) (string, string) {
	t.Helper()
	ctx := context.Background()
	base, branch, err := r.Snapshot(ctx, vm)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := r.Bundle(ctx, vm, branch, &b); err != nil {
		t.Fatal(err)
	}
	guest := filepath.Join(t.TempDir(), "work")
	script := strings.ReplaceAll(pushScript, GuestDir, guest)
	cmd := exec.Command("sh", "-c", script, "sh", base, branch)
	cmd.Stdin = &b
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("push script: %v\n%s", err, out)
	}
	return guest, base
}

func guestDiff(t *testing.T, guest, base string) []byte {
	t.Helper()
	cmd := exec.Command("sh", "-c", strings.ReplaceAll(diffScript, GuestDir, guest), "sh", base)
	cmd.Env = append(os.Environ(), identity...)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("diff script: %v", err)
	}
	return out
}

func TestWorkspaceRoundTrip(t *testing.T) {
	ctx := context.Background()
	r := userRepo(t)
	before := state(t, r)
	guest, base := guestClone(t, r, "vm1")
	if got := state(t, r); got != before {
		t.Fatalf("snapshot changed the user's repository:\n%s\nwant\n%s", got, before)
	}
	// the guest has history, the user's branch, and the uncommitted and untracked files
	if b, _ := os.ReadFile(filepath.Join(guest, "a.txt")); string(b) != "one\ntwo (uncommitted)\n" {
		t.Errorf("guest a.txt = %q", b)
	}
	if _, err := os.Stat(filepath.Join(guest, "new/untracked.txt")); err != nil {
		t.Errorf("untracked file not in the guest: %v", err)
	}
	if _, err := os.Stat(filepath.Join(guest, "debug.log")); err == nil {
		t.Errorf("an ignored file reached the guest")
	}
	if got := gitT(t, guest, "log", "--format=%s", "main"); got != "first" {
		t.Errorf("guest main log = %q", got)
	}
	if got := gitT(t, guest, "symbolic-ref", "--short", "HEAD"); got != GuestBranch {
		t.Errorf("guest branch = %q", got)
	}
	// the guest changes a file, adds a binary one, commits one change and leaves the rest
	write(t, filepath.Join(guest, "a.txt"), "one\ntwo (uncommitted)\nthree (guest)\n")
	gitT(t, guest, "commit", "-q", "-am", "guest commit")
	write(t, filepath.Join(guest, "b.bin"), "\x00\x01\x02binary\xff")
	write(t, filepath.Join(guest, "new/untracked.txt"), "changed in the guest\n")
	patch := guestDiff(t, guest, base)
	if !bytes.Contains(patch, []byte("GIT binary patch")) {
		t.Errorf("patch is not binary-safe:\n%s", patch)
	}
	if got := guestDiff(t, guest, ""); !bytes.Equal(got, patch) {
		t.Errorf("the diff against the guest's own base record differs:\n%s", got)
	}
	res, err := r.Apply(ctx, "vm1", patch)
	if err != nil {
		t.Fatal(err)
	}
	if res.Branch != "banger/vm1" || res.Files != 3 {
		t.Errorf("applied %+v", res)
	}
	if got := state(t, r); got != before {
		t.Fatalf("apply changed the user's working tree or branch:\n%s\nwant\n%s", got, before)
	}
	if got := gitT(t, r.Dir, "show", "banger/vm1:a.txt"); got != "one\ntwo (uncommitted)\nthree (guest)" {
		t.Errorf("branch a.txt = %q", got)
	}
	if got := gitT(t, r.Dir, "show", "banger/vm1:b.bin"); got != "\x00\x01\x02binary\xff" {
		t.Errorf("branch b.bin = %q", got)
	}
	if got := gitT(t, r.Dir, "diff", "--name-only", base, "banger/vm1"); got != "a.txt\nb.bin\nnew/untracked.txt" {
		t.Errorf("branch changes = %q", got)
	}
	// again: the branch exists
	if _, err := r.Apply(ctx, "vm1", patch); !api.IsAlreadyExists(err) || !strings.Contains(err.Error(), "git branch -D banger/vm1") {
		t.Errorf("second apply: %v", err)
	}
}

func TestApplyEmptyPatchMakesNothing(t *testing.T) {
	r := userRepo(t)
	guest, base := guestClone(t, r, "quiet")
	res, err := r.Apply(context.Background(), "quiet", guestDiff(t, guest, base))
	if err != nil || res != (Applied{}) {
		t.Fatalf("empty patch: %+v %v", res, err)
	}
	if out := gitT(t, r.Dir, "branch", "--list", "banger/*"); out != "" {
		t.Errorf("branch made for nothing: %s", out)
	}
}

func TestOpenRefusesADirectoryOutsideARepository(t *testing.T) {
	_, err := Open(context.Background(), t.TempDir())
	if !api.IsInvalid(err) || !strings.Contains(err.Error(), "not in a git repository") {
		t.Fatalf("Open of a plain directory: %v", err)
	}
	if _, err := Open(context.Background(), "/nonexistent/dir"); !api.IsInvalid(err) {
		t.Fatalf("Open of a missing directory: %v", err)
	}
}

func TestApplyWithoutAWorkspace(t *testing.T) {
	r := userRepo(t)
	if _, err := r.Apply(context.Background(), "never", []byte("x")); !api.IsNotFound(err) {
		t.Fatalf("apply without a base: %v", err)
	}
}

// TestAttackHostilePatch: the guest writes the patch. Paths out of the
// tree, into .git, or through a symlink must not land anywhere on the
// host: the apply fails and the repository, its hooks and the files next
// to it are untouched.
func TestAttackHostilePatch(t *testing.T) {
	ctx := context.Background()
	blob := func(path string) string {
		return "diff --git a/" + path + " b/" + path + "\nnew file mode 100755\n--- /dev/null\n+++ b/" + path +
			"\n@@ -0,0 +1 @@\n+#!/bin/sh\n"
	}
	for _, tc := range []struct{ name, patch string }{
		{"dot-dot", blob("../x")},
		{"deep dot-dot", blob("a/../../x")},
		{"absolute", "diff --git a//tmp/x b//tmp/x\nnew file mode 100644\n--- /dev/null\n+++ b//tmp/x\n@@ -0,0 +1 @@\n+x\n"},
		{"git hook", blob(".git/hooks/post-checkout")},
		{"git config", blob(".git/config")},
		{"GIT upper case", blob(".GIT/hooks/pre-commit")},
		{"nested .git", blob("sub/.git/hooks/post-checkout")},
		{"garbage", "this is not a patch\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := userRepo(t)
			guestClone(t, r, "evil")
			before := state(t, r)
			_, err := r.Apply(ctx, "evil", []byte(tc.patch))
			if err == nil {
				out := gitT(t, r.Dir, "ls-tree", "-r", "--name-only", "banger/evil")
				t.Fatalf("hostile patch applied; branch has:\n%s", out)
			}
			t.Logf("refused: %v", err)
			if got := state(t, r); got != before {
				t.Errorf("repository changed:\n%s\nwant\n%s", got, before)
			}
			for _, p := range []string{filepath.Join(r.Dir, "..", "x"), filepath.Join(r.Dir, ".git/hooks/post-checkout"),
				filepath.Join(r.Dir, ".git/hooks/pre-commit")} {
				if _, err := os.Stat(p); err == nil {
					t.Errorf("%s was written", p)
				}
			}
			if out := gitT(t, r.Dir, "branch", "--list", "banger/*"); out != "" {
				t.Errorf("branch left by a refused patch: %s", out)
			}
		})
	}
}

func TestDiffBoundsThePatch(t *testing.T) {
	l := &limited{max: 10}
	l.Write([]byte("12345"))
	l.Write([]byte("678901234"))
	if !l.over || l.buf.Len() != 10 {
		t.Fatalf("limited: over=%v len=%d", l.over, l.buf.Len())
	}
	if _, err := Diff(context.Background(), nil, "not-a-commit; rm -rf /", 0); !api.IsInvalid(err) {
		t.Fatalf("bad base: %v", err)
	}
}
