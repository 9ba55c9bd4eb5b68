package ext4

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func requireTools(t *testing.T) {
	t.Helper()
	for _, tool := range Tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s: apt-get install e2fsprogs", tool)
		}
	}
}

// One filesystem through every operation: make from a tree, read it back,
// edit it, resize it both ways.
func TestIntegrationLifecycle(t *testing.T) {
	requireTools(t)
	ctx := context.Background()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	for p, data := range map[string]string{"etc/ssh/ssh_host_x": "key", "etc/machine-id": "abc\n", "root/.profile": "hi\n"} {
		os.MkdirAll(filepath.Join(tree, filepath.Dir(p)), 0o755)
		os.WriteFile(filepath.Join(tree, p), []byte(data), 0o644)
	}
	img := filepath.Join(dir, "fs.ext4")
	if err := Make(ctx, img, 64<<20, "test", tree); err != nil {
		t.Fatal(err)
	}
	if err := Make(ctx, img, 64<<20, "test", tree); err == nil {
		t.Error("Make over an existing file succeeded")
	}
	head, _ := os.ReadFile(img)
	if !HasMagic(head[:MagicEnd]) || HasMagic(make([]byte, MagicEnd)) || HasMagic(head[:10]) {
		t.Error("HasMagic is wrong")
	}
	if size, err := Size(ctx, img); err != nil || size != 64<<20 {
		t.Fatalf("Size = %d, %v", size, err)
	}
	if names, err := ReadDir(ctx, img, "/etc/ssh"); err != nil || !slices.Equal(names, []string{"ssh_host_x"}) {
		t.Errorf("ReadDir = %v, %v", names, err)
	}
	if !Exists(ctx, img, "/etc/machine-id") || Exists(ctx, img, "/nope") {
		t.Error("Exists is wrong")
	}
	if err := Remove(ctx, img, "/etc/ssh/ssh_host_x", "/not/there"); err != nil || Exists(ctx, img, "/etc/ssh/ssh_host_x") {
		t.Errorf("Remove: %v", err)
	}
	if err := PutEmpty(ctx, img, "/etc/machine-id", 0o444); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	os.Mkdir(out, 0o755)
	if err := CopyOut(ctx, img, [2]string{"/etc/machine-id", filepath.Join(out, "mid")}); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(filepath.Join(out, "mid")); err != nil || fi.Size() != 0 || fi.Mode().Perm() != 0o644 {
		t.Errorf("machine-id after PutEmpty: %v %v", fi, err)
	}
	if out, err := debugfs(ctx, img, false, "stat /etc/machine-id"); err != nil || !strings.Contains(out, "Mode:  0444") {
		t.Errorf("machine-id mode in the image: %v\n%s", err, out)
	}
	seed := filepath.Join(dir, "seed.ext4")
	if found, err := MakeFromTree(ctx, seed, 16<<20, "work", img, "/root"); err != nil || !found {
		t.Fatalf("MakeFromTree /root = %v, %v", found, err)
	}
	if names, err := ReadDir(ctx, seed, "/"); err != nil || !slices.Contains(names, ".profile") {
		t.Errorf("the seed holds %v, %v; want .profile", names, err)
	}
	if found, err := MakeFromTree(ctx, filepath.Join(dir, "empty.ext4"), 16<<20, "work", img, "/nope"); err != nil || found {
		t.Errorf("MakeFromTree /nope = %v, %v; want an empty filesystem", found, err)
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, make([]byte, 3<<20), 0o644)
	if out, err := exec.Command("debugfs", "-w", "-R", "write "+big+" /root/big", img).CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if _, err := MakeFromTree(ctx, filepath.Join(dir, "small.ext4"), 2<<20, "work", img, "/root"); err == nil || !strings.Contains(err.Error(), "more than fits") {
		t.Errorf("MakeFromTree of a tree larger than the size: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "small.ext4")); !os.IsNotExist(err) {
		t.Errorf("a failed MakeFromTree left its file: %v", err)
	}
	if err := Check(ctx, img); err != nil {
		t.Fatal(err)
	}
	os.Truncate(img, 128<<20)
	if err := Preen(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := Grow(ctx, img); err != nil {
		t.Fatal(err)
	}
	if size, _ := Size(ctx, img); size != 128<<20 {
		t.Errorf("after Grow: %d", size)
	}
	min, err := MinSize(ctx, img)
	if err != nil || min <= 0 || min >= 128<<20 {
		t.Fatalf("MinSize = %d, %v", min, err)
	}
	if err := Resize(ctx, img, 1<<20); !errors.Is(err, ErrTooSmall) {
		t.Errorf("Resize below the contents: %v", err)
	}
	if err := Check(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := Resize(ctx, img, 96<<20); err != nil {
		t.Fatal(err)
	}
	if err := Check(ctx, img); err != nil {
		t.Fatal(err)
	}
	size, err := Shrink(ctx, img)
	if fi, _ := os.Stat(img); err != nil || size >= 96<<20 || fi.Size() != size {
		t.Errorf("Shrink = %d, %v (file %d)", size, err, fi.Size())
	}
}

func TestCheckRefusesGarbage(t *testing.T) {
	requireTools(t)
	p := filepath.Join(t.TempDir(), "junk")
	os.WriteFile(p, make([]byte, 1<<20), 0o644)
	if err := Check(context.Background(), p); err == nil {
		t.Error("e2fsck passed a file of zeros")
	}
	if _, err := Size(context.Background(), p); err == nil {
		t.Error("Size of a file of zeros")
	}
}
