package image

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/vmm"
)

// Capturing turns a VM's disks into a new image: build and promote share
// these steps. The rootfs is the VM's system disk as a raw ext4 with its
// per-VM identity removed; the work-seed is its work disk shrunk to fit
// (or the parent's seed); the boot set is the parent's, unless a newer
// kernel with its initramfs is in the rootfs's /boot.

// identityFiles are made on a VM's first boot and must not be shared by
// the VMs of an image (each gets its own host key and machine-id).
var identityFiles = []string{
	"/etc/hostname", "/var/lib/dbus/machine-id", "/var/lib/systemd/random-seed",
	"/var/lib/systemd/credential.secret",
}

// checkFS runs e2fsck -fy on an ext4 image: "errors corrected" is fine, an
// uncorrectable filesystem is an error.
func checkFS(ctx context.Context, path string) error {
	out, err := exec.CommandContext(ctx, "e2fsck", "-f", "-y", path).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) && ee.ExitCode() <= 2 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w: %s", filepath.Base(path), err, lastLines(out, 5))
	}
	return nil
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// debugfs runs debugfs commands on an ext4 image (-w to write) and returns
// its output.
func debugfs(ctx context.Context, path string, write bool, cmds ...string) (string, error) {
	f, err := os.CreateTemp("", "banger-debugfs-")
	if err != nil {
		return "", err
	}
	defer os.Remove(f.Name())
	if _, err := f.WriteString(strings.Join(cmds, "\n") + "\n"); err != nil {
		f.Close()
		return "", err
	}
	f.Close()
	args := []string{"-f", f.Name(), path}
	if write {
		args = append([]string{"-w"}, args...)
	}
	out, err := exec.CommandContext(ctx, "debugfs", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("debugfs on %s: %w: %s", filepath.Base(path), err, lastLines(out, 5))
	}
	return string(out), nil
}

// listDir lists the names in dir of an ext4 image (debugfs ls -p).
func listDir(ctx context.Context, rootfs, dir string) ([]string, error) {
	out, err := debugfs(ctx, rootfs, false, "ls -p "+dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, line := range strings.Split(out, "\n") {
		// /inode/mode/uid/gid/name/size/
		f := strings.Split(strings.TrimSpace(line), "/")
		if len(f) >= 7 && f[5] != "." && f[5] != ".." && f[5] != "" {
			names = append(names, f[5])
		}
	}
	return names, nil
}

// resetIdentity removes what a VM made for itself on first boot (SSH host
// keys, machine-id, hostname, random seed) from a captured rootfs, so every
// VM of the new image makes its own, as with images from nothing.
func resetIdentity(ctx context.Context, rootfs string) error {
	ssh, err := listDir(ctx, rootfs, "/etc/ssh")
	if err != nil {
		return err
	}
	var cmds []string
	for _, n := range ssh {
		if strings.HasPrefix(n, "ssh_host_") {
			cmds = append(cmds, "rm /etc/ssh/"+n)
		}
	}
	for _, p := range identityFiles {
		cmds = append(cmds, "rm "+p)
	}
	// An empty machine-id: systemd makes a new one on the next first boot.
	empty, err := os.CreateTemp("", "banger-machine-id-")
	if err != nil {
		return err
	}
	empty.Close()
	defer os.Remove(empty.Name())
	if err := os.Chmod(empty.Name(), 0o444); err != nil {
		return err
	}
	cmds = append(cmds, "rm /etc/machine-id", "write "+empty.Name()+" /etc/machine-id",
		"sif /etc/machine-id mode 0100444", "sif /etc/machine-id uid 0", "sif /etc/machine-id gid 0")
	if _, err := debugfs(ctx, rootfs, true, cmds...); err != nil {
		return fmt.Errorf("resetting the VM identity in the rootfs: %w", err)
	}
	return checkFS(ctx, rootfs)
}

// superblock returns an ext4 image's block count and block size.
func superblock(ctx context.Context, path string) (blocks, bsize int64, err error) {
	out, err := exec.CommandContext(ctx, "dumpe2fs", "-h", path).Output()
	if err != nil {
		return 0, 0, fmt.Errorf("reading the superblock of %s: %w", filepath.Base(path), err)
	}
	for _, line := range strings.Split(string(out), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch strings.TrimSpace(k) {
		case "Block count":
			blocks = n
		case "Block size":
			bsize = n
		}
	}
	if blocks == 0 || bsize == 0 {
		return 0, 0, fmt.Errorf("no block count in the superblock of %s", filepath.Base(path))
	}
	return blocks, bsize, nil
}

// fsSize returns an ext4 image's filesystem size in bytes.
func fsSize(ctx context.Context, path string) (int64, error) {
	blocks, bsize, err := superblock(ctx, path)
	return blocks * bsize, err
}

func blockSize(ctx context.Context, path string) (int64, error) {
	_, bsize, err := superblock(ctx, path)
	return bsize, err
}

// resizeFS makes an ext4 image size bytes (growing or shrinking the
// filesystem and the file). A shrink below what the files need is Invalid.
func resizeFS(ctx context.Context, path string, size int64) error {
	cur, err := fsSize(ctx, path)
	if err != nil {
		return err
	}
	if size == cur {
		return nil
	}
	if size > cur {
		return disk.Grow(ctx, path, size)
	}
	if err := checkFS(ctx, path); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "resize2fs", path, strconv.FormatInt(size>>10, 10)+"K").CombinedOutput()
	if err != nil {
		return api.Invalid("--size %d MiB is too small for the root filesystem: %s", size>>20, lastLines(out, 2)).
			WithFix("give a larger --size, or leave it out to keep the parent's size")
	}
	return os.Truncate(path, size)
}

// fitFS sizes an ext4 image to its contents plus the headroom image create
// gives (30 % and the metadata overhead, in 64 MiB steps), never below
// floor: a builder's grown disk becomes an image of a sensible size.
func fitFS(ctx context.Context, path string, floor int64) error {
	if err := checkFS(ctx, path); err != nil {
		return err
	}
	out, err := exec.CommandContext(ctx, "resize2fs", "-P", path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("measuring %s: %w: %s", filepath.Base(path), err, lastLines(out, 3))
	}
	var blocks int64
	for _, line := range strings.Split(string(out), "\n") {
		if _, v, ok := strings.Cut(line, "Estimated minimum size of the filesystem:"); ok {
			blocks, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		}
	}
	if blocks == 0 {
		return fmt.Errorf("measuring %s: no minimum size in: %s", filepath.Base(path), lastLines(out, 3))
	}
	bsize, err := blockSize(ctx, path)
	if err != nil {
		return err
	}
	used := blocks * bsize
	return resizeFS(ctx, path, max(floor, roundUp(used+used*headroomPct/100+fsOverhead, sizeAlignment)))
}

// shrinkWrap shrinks an ext4 image to its minimum (at least WorkSeedSize)
// and truncates the file to match: a work disk becomes a work-seed that VMs
// grow to their disk size.
func shrinkWrap(ctx context.Context, path string) error {
	if err := checkFS(ctx, path); err != nil {
		return err
	}
	if out, err := exec.CommandContext(ctx, "resize2fs", "-M", path).CombinedOutput(); err != nil {
		return fmt.Errorf("shrinking %s: %w: %s", filepath.Base(path), err, lastLines(out, 3))
	}
	size, err := fsSize(ctx, path)
	if err != nil {
		return err
	}
	if err := os.Truncate(path, size); err != nil {
		return err
	}
	if size < WorkSeedSize {
		return disk.Grow(ctx, path, WorkSeedSize)
	}
	return nil
}

// bootSet puts the kernel, initramfs and vmlinux into staging: the
// parent's, unless the rootfs's /boot holds a kernel of another version
// together with its initramfs (the script installed a newer kernel), which
// is then dumped from the rootfs and its vmlinux extracted. It returns the
// kernel version and the engines the result boots on.
func bootSet(ctx context.Context, parent api.Image, rootfs, staging string) (string, []string, error) {
	kver, err := newKernel(ctx, parent, rootfs)
	if err != nil {
		return "", nil, err
	}
	if kver == "" {
		for _, c := range [][2]string{{parent.Kernel, KernelFile}, {parent.Initrd, InitrdFile}, {parent.Vmlinux, VmlinuxFile}} {
			if c[0] == "" {
				continue
			}
			if err := copyFile(c[0], filepath.Join(staging, c[1])); err != nil {
				return "", nil, fmt.Errorf("copying the parent's boot set: %w", err)
			}
		}
		return parent.KernelVersion, slices.Clone(parent.Engines), nil
	}
	_, err = debugfs(ctx, rootfs, false,
		"dump -p /boot/vmlinuz-"+kver+" "+filepath.Join(staging, KernelFile),
		"dump -p /boot/initrd.img-"+kver+" "+filepath.Join(staging, InitrdFile))
	if err != nil {
		return "", nil, fmt.Errorf("reading kernel %s from the rootfs: %w", kver, err)
	}
	for _, f := range []string{KernelFile, InitrdFile} {
		if fileSize(filepath.Join(staging, f)) == 0 {
			return "", nil, fmt.Errorf("reading kernel %s from the rootfs: %s came out empty", kver, f)
		}
		if err := os.Chmod(filepath.Join(staging, f), 0o644); err != nil {
			return "", nil, err
		}
	}
	engines := []string{vmm.QEMU}
	if _, err := extractVmlinux(filepath.Join(staging, KernelFile), filepath.Join(staging, VmlinuxFile)); err == nil &&
		slices.Contains(parent.Engines, vmm.Firecracker) {
		engines = append(engines, vmm.Firecracker)
	}
	return kver, engines, nil
}

// newKernel returns the newest kernel version in the rootfs's /boot other
// than the parent's that has its initramfs next to it, or "".
func newKernel(ctx context.Context, parent api.Image, rootfs string) (string, error) {
	names, err := listDir(ctx, rootfs, "/boot")
	if err != nil {
		return "", err
	}
	var found []string
	for _, n := range names {
		v, ok := strings.CutPrefix(n, "vmlinuz-")
		if ok && v != parent.KernelVersion && slices.Contains(names, "initrd.img-"+v) {
			found = append(found, v)
		}
	}
	if len(found) == 0 {
		return "", nil
	}
	slices.SortFunc(found, compareVersions)
	return found[len(found)-1], nil
}

// compareVersions orders kernel versions like 6.1.0-28-cloud-amd64 by their
// numeric fields.
func compareVersions(a, b string) int {
	split := func(s string) []string {
		return strings.FieldsFunc(s, func(r rune) bool { return r == '.' || r == '-' })
	}
	fa, fb := split(a), split(b)
	for i := 0; i < min(len(fa), len(fb)); i++ {
		na, ea := strconv.Atoi(fa[i])
		nb, eb := strconv.Atoi(fb[i])
		switch {
		case ea == nil && eb == nil && na != nb:
			return na - nb
		case (ea != nil || eb != nil) && fa[i] != fb[i]:
			return strings.Compare(fa[i], fb[i])
		}
	}
	return len(fa) - len(fb)
}

// newStaging makes a staging dir for image name under the builder's
// staging dir (on the images' filesystem, cleaned at daemon start).
func (s *Service) newStaging(name string) (string, error) {
	dir := filepath.Join(s.ImagesDir, "..", "staging")
	if s.Builder != nil && s.Builder.StagingDir != "" {
		dir = s.Builder.StagingDir
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating staging dir: %w", err)
	}
	st, err := os.MkdirTemp(dir, name+"-")
	if err != nil {
		return "", fmt.Errorf("creating staging dir: %w", err)
	}
	return st, nil
}

// finish fingerprints the artefacts in staging, moves them to
// ImagesDir/<name> and stores the image. img carries the name, parent,
// source, recipe, kernel version, engines and features; paths and sizes
// are filled here.
func (s *Service) finish(ctx context.Context, staging string, img api.Image) (api.Image, error) {
	fp, err := artefactFingerprint(img.Recipe, staging)
	if err != nil {
		return api.Image{}, err
	}
	final := filepath.Join(s.ImagesDir, img.Name)
	d := describe(final, staging)
	d.Name, d.Fingerprint, d.Parent, d.Source, d.Recipe = img.Name, fp, img.Parent, img.Source, img.Recipe
	d.KernelVersion, d.Engines, d.Features, d.Managed = img.KernelVersion, img.Engines, img.Features, true
	d.CreatedAt = img.CreatedAt
	if _, err := os.Stat(final); err == nil {
		return api.Image{}, api.AlreadyExists("image directory %s already exists", final).
			WithFix("pick another name, or delete the image first: banger image delete " + img.Name)
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return api.Image{}, err
	}
	if err := os.Rename(staging, final); err != nil {
		return api.Image{}, fmt.Errorf("moving the image into place: %w", err)
	}
	return s.store(ctx, d)
}
