package image

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/agent"
	"banger/internal/api"
	"banger/internal/ext4"
	"banger/internal/feature"
	"banger/internal/image/vmlinux"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/revert"
)

// Register stage names.
const (
	StageValidate = "validate"
	StageCopy     = "copy"
)

// MinRootfsBytes is the smallest root filesystem Register accepts.
const MinRootfsBytes = 16 << 20

// kernelKind is what a --kernel file turned out to be.
type kernelKind int

const (
	kernelBzImage kernelKind = iota + 1
	kernelELF
)

// Register adopts existing artefacts as image req.Name in
// imagesDir/<name>: it validates every file first (each bad one is Invalid
// naming the flag, the file and the problem), copies them into a staging
// dir, extracts a vmlinux from a bzImage (unless --vmlinux is given),
// generates a work-seed from the rootfs's /root when none is given, and
// renames the result into place. An ELF-only kernel boots on Firecracker
// only (QEMU microvm needs the bzImage). The caller stores the metadata.
func Register(ctx context.Context, imagesDir string, req api.ImageRegisterRequest, rep progress.Reporter) (api.Image, error) {
	if rep == nil {
		rep = progress.Nop{}
	}
	var kind kernelKind
	err := progress.Run(rep, StageValidate, func() error {
		var err error
		kind, err = validateRegister(imagesDir, req)
		return err
	})
	if err != nil {
		return api.Image{}, err
	}
	if err := os.MkdirAll(imagesDir, 0o755); err != nil {
		return api.Image{}, fmt.Errorf("creating images dir: %w", err)
	}
	staging, err := os.MkdirTemp(imagesDir, ".register-"+req.Name+"-")
	if err != nil {
		return api.Image{}, fmt.Errorf("creating staging dir: %w", err)
	}
	r := revert.New()
	defer r.Fail()
	r.Add(func() { os.RemoveAll(staging) })
	final := filepath.Join(imagesDir, req.Name)
	img, err := registerInto(ctx, staging, final, req, kind, rep)
	if err != nil {
		return api.Image{}, fmt.Errorf("registering image %s: %w", req.Name, err)
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return api.Image{}, err
	}
	if _, err := os.Stat(final); err == nil {
		return api.Image{}, api.AlreadyExists("image directory %s already exists", final).WithFix("pick another name")
	}
	if err := os.Rename(staging, final); err != nil {
		return api.Image{}, fmt.Errorf("moving the image into place: %w", err)
	}
	r.Success()
	return img, nil
}

func registerInto(ctx context.Context, staging, final string, req api.ImageRegisterRequest, kind kernelKind,
	rep progress.Reporter) (api.Image, error) {
	kernelDst := filepath.Join(staging, KernelFile)
	if kind == kernelELF {
		kernelDst = filepath.Join(staging, VmlinuxFile)
	}
	err := progress.Run(rep, StageCopy, func() error {
		copies := [][2]string{{req.Kernel, kernelDst}, {req.Initrd, filepath.Join(staging, InitrdFile)},
			{req.Rootfs, filepath.Join(staging, RootfsFile)}}
		if req.WorkSeed != "" {
			copies = append(copies, [2]string{req.WorkSeed, filepath.Join(staging, WorkSeedFile)})
		}
		if req.Vmlinux != "" && kind == kernelBzImage {
			copies = append(copies, [2]string{req.Vmlinux, filepath.Join(staging, VmlinuxFile)})
		}
		for _, c := range copies {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := CopyFile(c[0], c[1]); err != nil {
				return err
			}
		}
		return verifyFilesystems(ctx, staging, req)
	})
	if err != nil {
		return api.Image{}, err
	}
	if kind == kernelBzImage && req.Vmlinux == "" {
		err := progress.Run(rep, StageVmlinux, func() error {
			_, err := ExtractVmlinux(kernelDst, filepath.Join(staging, VmlinuxFile))
			return err
		})
		if err != nil {
			return api.Image{}, api.Invalid("--kernel %s: extracting the vmlinux: %w", req.Kernel, err).
				WithFix("pass the uncompressed kernel with --vmlinux FILE")
		}
	}
	if req.WorkSeed == "" {
		if err := progress.Run(rep, StageWorkSeed, func() error { return SeedFromRootfs(ctx, staging) }); err != nil {
			return api.Image{}, err
		}
	}
	var img api.Image
	err = progress.Run(rep, StageFingerprint, func() error {
		fp, err := ArtefactFingerprint("register", staging)
		if err != nil {
			return err
		}
		img = Describe(final, staging)
		img.Name, img.Fingerprint, img.Source, img.Managed = req.Name, fp, "register", true
		img.KernelVersion = kernelVersion(filepath.Join(staging, KernelFile), filepath.Join(staging, VmlinuxFile))
		img.CreatedAt = time.Now().UTC()
		img.Engines = []string{"firecracker"}
		if kind == kernelBzImage {
			img.Engines = []string{"qemu", "firecracker"}
		}
		img.Features = rootfsFeatures(ctx, filepath.Join(staging, RootfsFile))
		return nil
	})
	return img, err
}

// validateRegister checks the name and every file before anything is
// copied, and tells what the kernel file is.
func validateRegister(imagesDir string, req api.ImageRegisterRequest) (kernelKind, error) {
	if err := names.Validate(req.Name); err != nil {
		return 0, fmt.Errorf("image name: %w", err)
	}
	if _, err := os.Stat(filepath.Join(imagesDir, req.Name)); err == nil {
		return 0, api.AlreadyExists("image directory %s already exists", filepath.Join(imagesDir, req.Name)).
			WithFix("pick another name, or delete the image first").WithAction("image delete", req.Name)
	}
	kind, err := checkKernel(req.Kernel)
	if err != nil {
		return 0, err
	}
	if err := checkInitrd(req.Initrd); err != nil {
		return 0, err
	}
	if err := checkExt4("--rootfs", req.Rootfs, MinRootfsBytes); err != nil {
		return 0, err
	}
	if req.WorkSeed != "" {
		if err := checkExt4("--work-seed", req.WorkSeed, 1<<20); err != nil {
			return 0, err
		}
	}
	if req.Vmlinux != "" {
		b, err := readFlagFile("--vmlinux", req.Vmlinux, 0)
		if err != nil {
			return 0, err
		}
		if err := vmlinux.CheckELF(b); err != nil {
			return 0, api.Invalid("--vmlinux %s: not an x86-64 kernel ELF: %w", req.Vmlinux, err).
				WithFix("pass the uncompressed vmlinux, or leave --vmlinux out to extract it from --kernel")
		}
	}
	return kind, nil
}

// readFlagFile reads up to n bytes (0 = all) of a file named by a flag,
// turning a missing or unreadable file into Invalid.
func readFlagFile(flag, path string, n int) ([]byte, error) {
	if path == "" {
		return nil, api.Invalid("%s is required", flag).WithFix(flag + " FILE")
	}
	fi, err := os.Stat(path)
	if err != nil {
		return nil, api.Invalid("%s %s: %w", flag, path, err).WithFix("check the path")
	}
	if !fi.Mode().IsRegular() {
		return nil, api.Invalid("%s %s: not a regular file", flag, path).WithFix("point " + flag + " at a file")
	}
	if n == 0 {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, api.Invalid("%s %s: %w", flag, path, err)
		}
		return b, nil
	}
	b, err := ReadHead(path, n)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, api.Invalid("%s %s: %w", flag, path, err)
	}
	return b, nil
}

func checkKernel(path string) (kernelKind, error) {
	b, err := readFlagFile("--kernel", path, 4096)
	if err != nil {
		return 0, err
	}
	switch {
	case vmlinux.IsBzImage(b):
		return kernelBzImage, nil
	case vmlinux.IsELF(b):
		full, err := os.ReadFile(path)
		if err != nil {
			return 0, api.Invalid("--kernel %s: %w", path, err)
		}
		if err := vmlinux.CheckELF(full); err != nil {
			return 0, api.Invalid("--kernel %s: an ELF but not an x86-64 kernel: %w", path, err)
		}
		return kernelELF, nil
	}
	return 0, api.Invalid("--kernel %s: not a kernel (no bzImage HdrS magic, not an ELF)", path).
		WithFix("pass a bzImage (/boot/vmlinuz-*) or an uncompressed vmlinux")
}

func checkInitrd(path string) error {
	b, err := readFlagFile("--initrd", path, 8)
	if err != nil {
		return err
	}
	if len(b) == 0 {
		return api.Invalid("--initrd %s: the file is empty", path).WithFix("pass an initramfs (/boot/initrd.img-*)")
	}
	for _, magic := range [][]byte{{0x1f, 0x8b}, {0x28, 0xb5, 0x2f, 0xfd}, []byte("0707"), {0xfd, '7', 'z', 'X', 'Z'},
		{0x02, 0x21, 0x4c, 0x18}, {0x04, 0x22, 0x4d, 0x18}, []byte("BZh"), {0x5d, 0x00, 0x00}} {
		if bytes.HasPrefix(b, magic) {
			return nil
		}
	}
	return api.Invalid("--initrd %s: not an initramfs (no cpio, gzip, zstd, xz, lz4, bzip2 or lzma magic)", path).
		WithFix("pass an initramfs (/boot/initrd.img-*)")
}

func checkExt4(flag, path string, minSize int64) error {
	b, err := readFlagFile(flag, path, ext4.MagicEnd)
	if err != nil {
		return err
	}
	if !ext4.HasMagic(b) {
		return api.Invalid("%s %s: not an ext4 filesystem (no superblock magic 0xEF53)", flag, path).
			WithFix("pass a raw ext4 image, e.g. made with mkfs.ext4 -d DIR FILE SIZE")
	}
	if n := FileSize(path); n < minSize {
		return api.Invalid("%s %s: %d bytes is too small (at least %d MiB)", flag, path, n, minSize>>20).
			WithFix("pass a complete filesystem image")
	}
	return nil
}

// verifyFilesystems checks the staged rootfs and work-seed (e2fsck -f -n,
// in the sandbox): a damaged or crafted filesystem is Invalid naming the
// flag, before any other tool reads it.
func verifyFilesystems(ctx context.Context, staging string, req api.ImageRegisterRequest) error {
	checks := [][3]string{{"--rootfs", req.Rootfs, RootfsFile}}
	if req.WorkSeed != "" {
		checks = append(checks, [3]string{"--work-seed", req.WorkSeed, WorkSeedFile})
	}
	for _, c := range checks {
		if err := ext4.Verify(ctx, filepath.Join(staging, c[2])); err != nil {
			if api.IsUnavailable(err) {
				return err
			}
			return api.Invalid("%s %s: not a sound ext4 filesystem: %w", c[0], c[1], err).
				WithFix("repair it with e2fsck -f " + c[1] + " (or make it again), then register it")
		}
	}
	return nil
}

// SeedFromRootfs makes staging's work-seed.ext4 from its rootfs's /root
// (read with debugfs, no mount), or an empty one when /root cannot be read.
func SeedFromRootfs(ctx context.Context, staging string) error {
	return seedFrom(ctx, filepath.Join(staging, RootfsFile), filepath.Join(staging, WorkSeedFile))
}

// seedFrom makes the work-seed out from rootfs's /root: read and built
// inside the sandbox (ext4.MakeFromTree), so nothing in the guest's tree is
// resolved on the host.
func seedFrom(ctx context.Context, rootfs, out string) error {
	_, err := ext4.MakeFromTree(ctx, out, WorkSeedSize, "work", rootfs, "/root")
	return err
}

// rootfsFeatures detects the features an ext4 rootfs carries: the guest
// agent, and each shipped feature whose marker file is there.
func rootfsFeatures(ctx context.Context, rootfs string) []string {
	var f []string
	if ext4.Exists(ctx, rootfs, agent.AgentPath) {
		f = append(f, feature.Agent)
	}
	for _, d := range feature.All() {
		if ext4.Exists(ctx, rootfs, d.Marker) {
			f = append(f, d.Name)
		}
	}
	return f
}

// kernelVersion reads the version string from a bzImage's setup header
// (kernel_version at 0x20e), else from "Linux version " inside the vmlinux.
func kernelVersion(bzImage, vmlinuxPath string) string {
	if b, err := ReadHead(bzImage, 64<<10); err == nil && vmlinux.IsBzImage(b) && len(b) > 0x210 {
		off := int(binary.LittleEndian.Uint16(b[0x20e:])) + 0x200
		if off < len(b) {
			if v := firstField(b[off:min(len(b), off+128)]); v != "" {
				return v
			}
		}
	}
	if b, err := os.ReadFile(vmlinuxPath); err == nil {
		if i := bytes.Index(b, []byte("Linux version ")); i >= 0 {
			return firstField(b[i+14 : min(len(b), i+140)])
		}
	}
	return ""
}

// firstField returns the first space-separated word of a NUL-terminated
// string.
func firstField(b []byte) string {
	if i := bytes.IndexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	if f := strings.Fields(string(b)); len(f) > 0 {
		return f[0]
	}
	return ""
}
