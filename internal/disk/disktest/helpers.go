package disktest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"banger/internal/disk"
	"banger/internal/disk/internal/blk"
)

// toolPackages names the Debian package of each tool the suites use.
var toolPackages = map[string]string{
	"mkfs.ext4": "e2fsprogs", "debugfs": "e2fsprogs", "e2fsck": "e2fsprogs", "resize2fs": "e2fsprogs",
	"qemu-img": "qemu-utils", "qemu-io": "qemu-utils",
	"mkfs.xfs": "xfsprogs", "mkfs.btrfs": "btrfs-progs",
	"losetup": "mount", "mount": "mount", "dmsetup": "dmsetup",
}

// RequireTools skips t when a tool is missing, naming the package to
// install.
func RequireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Skipf("%s not found: apt-get install %s", n, toolPackages[n])
		}
	}
}

// RequireRoot skips t unless it runs as root with loop devices.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (loop devices, mounts): run the integration tests as root")
	}
	if _, err := os.Stat("/dev/loop-control"); err != nil {
		t.Skip("no /dev/loop-control: modprobe loop")
	}
	RequireTools(t, "losetup", "mount")
}

// MakeExt4 makes an ext4 image of size (mkfs.ext4 syntax, e.g. "64M") at
// path holding /hello.txt, /etc/hostname and a 256 KiB /data.bin.
func MakeExt4(t testing.TB, path, size string) {
	t.Helper()
	src := t.TempDir()
	must(t, os.WriteFile(filepath.Join(src, "hello.txt"), []byte(helloText), 0o644))
	must(t, os.MkdirAll(filepath.Join(src, "etc"), 0o755))
	must(t, os.WriteFile(filepath.Join(src, "etc", "hostname"), []byte("suite\n"), 0o644))
	data := make([]byte, 256<<10)
	for i := range data {
		data[i] = byte(i * 7)
	}
	must(t, os.WriteFile(filepath.Join(src, "data.bin"), data, 0o644))
	run(t, "mkfs.ext4", "-q", "-F", "-b", "4096", "-d", src, path, size)
}

// RawView returns a raw image with dk's content: dk.Path for raw disks, a
// qemu-img conversion for qcow2.
func RawView(t testing.TB, dk disk.Disk) string {
	t.Helper()
	if dk.Format != "qcow2" {
		return dk.Path
	}
	out := filepath.Join(t.TempDir(), "view.raw")
	run(t, "qemu-img", "convert", "-f", "qcow2", "-O", "raw", dk.Path, out)
	return out
}

// Cat returns the content of file inside the ext4 image raw (debugfs).
func Cat(t testing.TB, raw, file string) string {
	t.Helper()
	return run(t, "debugfs", "-R", "cat "+file, raw)
}

// Write writes n bytes of value at off into dk through its format.
func Write(t testing.TB, dk disk.Disk, off int64, value byte, n int) {
	t.Helper()
	if dk.Format == "qcow2" {
		run(t, "qemu-io", "-f", "qcow2", "-c", fmt.Sprintf("write -P 0x%02x %d %d", value, off, n), dk.Path)
		return
	}
	f, err := os.OpenFile(dk.Path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	for i := range buf {
		buf[i] = value
	}
	if _, err := f.WriteAt(buf, off); err != nil {
		t.Fatalf("writing %s: %v", dk.Path, err)
	}
	must(t, f.Sync())
}

// ReadRaw reads n bytes at off from the raw image at path.
func ReadRaw(t testing.TB, path string, off int64, n int) []byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		t.Fatalf("reading %s: %v", path, err)
	}
	return buf
}

// kernelState lists the loop devices backed by files under root, the
// mounts under root, and banger's dm targets.
func kernelState(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	loops, err := blkLoops()
	if err != nil {
		t.Fatal(err)
	}
	for dev, back := range loops {
		if strings.HasPrefix(back, root+"/") {
			out = append(out, "loop "+dev+" -> "+back)
		}
	}
	mounts, err := blk.MountsUnder(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mounts {
		out = append(out, "mount "+m)
	}
	names, _ := filepath.Glob("/sys/block/dm-*/dm/name")
	for _, n := range names {
		if b, err := os.ReadFile(n); err == nil && strings.HasPrefix(string(b), "banger-") {
			out = append(out, "dm "+strings.TrimSpace(string(b)))
		}
	}
	slices.Sort(out)
	return out
}

// leakCheck records kernel state under root now and, when t ends (after
// every cleanup registered later), fails t if loops, mounts or dm targets
// appeared, and releases them so one leak does not spoil the host.
func leakCheck(t *testing.T, root string) {
	t.Helper()
	before := kernelState(t, root)
	t.Cleanup(func() {
		var leaked []string
		// The kernel releases a loop device asynchronously when its last
		// opener (a just-unmounted filesystem) lets go: allow it a moment.
		for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(50 * time.Millisecond) {
			leaked = leaked[:0]
			for _, s := range kernelState(t, root) {
				if !slices.Contains(before, s) {
					leaked = append(leaked, s)
				}
			}
			if len(leaked) == 0 {
				return
			}
			if time.Now().After(deadline) {
				break
			}
		}
		t.Errorf("leaked kernel state: %v", leaked)
		release(leaked)
	})
}

func release(leaked []string) {
	ctx := context.Background()
	for _, s := range leaked { // dm first, then mounts, then loops
		if name, ok := strings.CutPrefix(s, "dm "); ok {
			blk.Run(ctx, "dmsetup", "remove", "--retry", name)
		}
	}
	for i := len(leaked) - 1; i >= 0; i-- {
		if p, ok := strings.CutPrefix(leaked[i], "mount "); ok {
			blk.Run(ctx, "umount", "-l", p)
		}
	}
	for _, s := range leaked {
		if rest, ok := strings.CutPrefix(s, "loop "); ok {
			dev, _, _ := strings.Cut(rest, " ")
			blk.Run(ctx, "losetup", "--detach", dev)
		}
	}
}

// MountFS loop-mounts a fresh sparse filesystem image of size bytes made
// by mkfs (e.g. "mkfs.btrfs", "-q") at dir, with cleanup. The image lives
// in t.TempDir().
func MountFS(t testing.TB, dir string, size int64, mkfs ...string) {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fs.img")
	f, err := os.Create(img)
	must(t, err)
	must(t, f.Truncate(size))
	must(t, f.Close())
	run(t, mkfs[0], append(mkfs[1:], img)...)
	loop, err := blk.LoopAttach(context.Background(), img, false)
	must(t, err)
	t.Cleanup(func() {
		if err := blk.LoopDetach(context.Background(), loop, img); err != nil {
			t.Errorf("releasing test filesystem: %v", err)
		}
	})
	run(t, "mount", loop, dir)
	t.Cleanup(func() {
		if _, err := blk.Run(context.Background(), "umount", dir); err != nil {
			t.Errorf("releasing test filesystem: %v", err)
		}
	})
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := blk.Run(context.Background(), name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
