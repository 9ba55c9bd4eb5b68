package build

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/ext4"
	"banger/internal/image"
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

// resetIdentity removes what a VM made for itself on first boot (SSH host
// keys, machine-id, hostname, random seed) from a captured rootfs, so every
// VM of the new image makes its own, as with images from nothing.
func resetIdentity(ctx context.Context, rootfs string) error {
	ssh, err := ext4.ReadDir(ctx, rootfs, "/etc/ssh")
	if err != nil {
		return err
	}
	var gone []string
	for _, n := range ssh {
		if strings.HasPrefix(n, "ssh_host_") {
			gone = append(gone, "/etc/ssh/"+n)
		}
	}
	if err := ext4.Remove(ctx, rootfs, append(gone, identityFiles...)...); err != nil {
		return fmt.Errorf("resetting the VM identity in the rootfs: %w", err)
	}
	// An empty machine-id: systemd makes a new one on the next first boot.
	if err := ext4.PutEmpty(ctx, rootfs, "/etc/machine-id", 0o444); err != nil {
		return fmt.Errorf("resetting the VM identity in the rootfs: %w", err)
	}
	return ext4.Check(ctx, rootfs)
}

// resizeFS makes an ext4 image size bytes (growing or shrinking the
// filesystem and the file). A shrink below what the files need is Invalid.
func resizeFS(ctx context.Context, path string, size int64) error {
	cur, err := ext4.Size(ctx, path)
	if err != nil {
		return err
	}
	if size == cur {
		return nil
	}
	if size > cur {
		return disk.Grow(ctx, path, size)
	}
	if err := ext4.Check(ctx, path); err != nil {
		return err
	}
	if err := ext4.Resize(ctx, path, size); err != nil {
		return api.Invalid("--size %d MiB is too small for the root filesystem: %w", size>>20, err).
			WithFix("give a larger --size, or leave it out to keep the parent's size")
	}
	return os.Truncate(path, size)
}

// fitFS sizes an ext4 image to its contents plus the headroom image create
// gives (30 % and the metadata overhead, in 64 MiB steps), never below
// floor: a builder's grown disk becomes an image of a sensible size.
func fitFS(ctx context.Context, path string, floor int64) error {
	if err := ext4.Check(ctx, path); err != nil {
		return err
	}
	used, err := ext4.MinSize(ctx, path)
	if err != nil {
		return err
	}
	return resizeFS(ctx, path, max(floor, image.RoundUp(used+used*image.HeadroomPct/100+image.FSOverhead, image.SizeAlignment)))
}

// shrinkWrap shrinks an ext4 image to its minimum (at least WorkSeedSize)
// and truncates the file to match: a work disk becomes a work-seed that VMs
// grow to their disk size.
func shrinkWrap(ctx context.Context, path string) error {
	if err := ext4.Check(ctx, path); err != nil {
		return err
	}
	size, err := ext4.Shrink(ctx, path)
	if err != nil {
		return err
	}
	if size < image.WorkSeedSize {
		return disk.Grow(ctx, path, image.WorkSeedSize)
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
		for _, c := range [][2]string{{parent.Kernel, image.KernelFile}, {parent.Initrd, image.InitrdFile}, {parent.Vmlinux, image.VmlinuxFile}} {
			if c[0] == "" {
				continue
			}
			if err := image.CopyFile(c[0], filepath.Join(staging, c[1])); err != nil {
				return "", nil, fmt.Errorf("copying the parent's boot set: %w", err)
			}
		}
		return parent.KernelVersion, slices.Clone(parent.Engines), nil
	}
	err = ext4.CopyOut(ctx, rootfs,
		[2]string{"/boot/vmlinuz-" + kver, filepath.Join(staging, image.KernelFile)},
		[2]string{"/boot/initrd.img-" + kver, filepath.Join(staging, image.InitrdFile)})
	if err != nil {
		return "", nil, fmt.Errorf("reading kernel %s from the rootfs: %w", kver, err)
	}
	for _, f := range []string{image.KernelFile, image.InitrdFile} {
		if image.FileSize(filepath.Join(staging, f)) == 0 {
			return "", nil, fmt.Errorf("reading kernel %s from the rootfs: %s came out empty", kver, f)
		}
		if err := os.Chmod(filepath.Join(staging, f), 0o644); err != nil {
			return "", nil, err
		}
	}
	engines := []string{vmm.QEMU}
	if _, err := image.ExtractVmlinux(filepath.Join(staging, image.KernelFile), filepath.Join(staging, image.VmlinuxFile)); err == nil &&
		slices.Contains(parent.Engines, vmm.Firecracker) {
		engines = append(engines, vmm.Firecracker)
	}
	return kver, engines, nil
}

// newKernel returns the newest kernel version in the rootfs's /boot other
// than the parent's that has its initramfs next to it, or "".
func newKernel(ctx context.Context, parent api.Image, rootfs string) (string, error) {
	names, err := ext4.ReadDir(ctx, rootfs, "/boot")
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
