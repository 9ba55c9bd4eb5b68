// Package debian makes banger images from nothing: debootstrap into a
// chroot, Debian's cloud kernel and an initramfs with the virtio drivers,
// the vmlinux extracted for Firecracker, the features' scripts (--with), the
// bake (agent, sshd, DNS, fstab, units) and mkfs.ext4 -d for the rootfs and
// the work-seed — without booting anything. Maker.FromDebian builds in a
// staging directory renamed into the images dir only when complete, so a
// failed or cancelled build leaves nothing behind; the caller (image.Service,
// the test image cache) stores the result. The Recipe and its fingerprint
// name what went in.
//
// It owns the chroot and everything about Debian (suites, mirrors,
// packages). It must not know the store, VMs or images made from images
// (image/build and its builder VMs): it hands back an api.Image.
package debian

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"banger/internal/api"
	"banger/internal/feature"
	"banger/internal/image"
	"banger/internal/progress"
	"banger/internal/revert"
)

// Stage names reported by FromDebian, in order; after image.StageVmlinux, one
// stage per --with feature, named after it (e.g. "opencode").
const (
	StageDebootstrap = "debootstrap"
	StageKernel      = "kernel"
	StageBake        = "bake"
	StageRootfs      = "rootfs"
)

// BasePackages are always installed by debootstrap.
var BasePackages = []string{
	"systemd-sysv", "udev", "openssh-server", "iproute2", "ca-certificates", "sudo", "curl", "git",
	"initramfs-tools", "zstd",
}

// KernelPackage is the kernel installed into every image: Debian's cloud
// kernel has the virtio drivers as modules and boots under both engines.
const KernelPackage = "linux-image-cloud-amd64"

// Maker makes images from nothing (image.FromNothing). All fields but Log
// and Debootstrap are required.
type Maker struct {
	// ImagesDir receives finished images as ImagesDir/<name>.
	ImagesDir string
	// StagingDir holds builds in progress; it must be on the same
	// filesystem as ImagesDir (the finished build is renamed).
	StagingDir string
	// AgentBin is the static banger-agent binary baked into the image.
	AgentBin string
	// SSHPubKey is the authorized_keys line for root.
	SSHPubKey string
	// Log receives stage timings; nil discards.
	Log *slog.Logger
	// Debootstrap is the debootstrap binary; "" means "debootstrap" in PATH.
	Debootstrap string
	// Mirror is the Debian mirror images are made from (the config's
	// debian_mirror); "" = the one the host's apt uses, else
	// deb.debian.org. Requests cannot name another.
	Mirror string
	// Keyring verifies debootstrap's downloads; "" = ArchiveKeyring.
	Keyring string
	// BuildLogMax caps build.log (build_log_max); <= 0: no cap.
	BuildLogMax int64
}

// makeRun is one FromDebian run.
type makeRun struct {
	*Maker
	req     api.ImageCreateRequest
	staging string // the staging dir: artefacts land here
	root    string // the chroot tree
	home    string // root's home, moved out of the tree: the work-seed's contents
	log     *image.BuildLog
	rep     progress.Reporter
	ch      *chroot
	kver    string
	mmio    bool // the initramfs carries virtio_mmio
}

// FromDebian builds an image named req.Name from Debian req.Suite. It checks
// the request and the host first (name, tools, suite, free space, mirror),
// builds in StagingDir/<name>-<random> and renames the result to
// ImagesDir/<name>. It returns the metadata; the caller stores it. On any
// failure or cancellation it unmounts what it mounted and removes the
// staging directory.
func (b *Maker) FromDebian(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error) {
	if err := b.checkRequest(&req); err != nil {
		return api.Image{}, err
	}
	if err := b.checkTools(); err != nil {
		return api.Image{}, err
	}
	if err := os.MkdirAll(b.StagingDir, 0o700); err != nil {
		return api.Image{}, fmt.Errorf("creating staging dir: %w", err)
	}
	if err := checkFreeSpace(b.StagingDir); err != nil {
		return api.Image{}, err
	}
	if err := checkMirror(ctx, req.Mirror, req.Suite); err != nil {
		return api.Image{}, err
	}
	r := revert.New()
	defer r.Fail()
	staging, err := image.MakeStaging(b.StagingDir, req.Name, r, b.logger())
	if err != nil {
		return api.Image{}, err
	}
	rep = progress.Logged(rep, b.logger().With("image", req.Name))
	blog, err := image.NewBuildLog(filepath.Join(staging, image.BuildLogFile), rep, b.BuildLogMax)
	if err != nil {
		return api.Image{}, err
	}
	defer blog.Close()
	bd := &makeRun{Maker: b, req: req, staging: staging, log: blog, rep: rep,
		root: filepath.Join(staging, "rootfs.d"), home: filepath.Join(staging, "roothome")}
	bd.ch = &chroot{dir: bd.root, log: blog}
	img, err := bd.run(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return api.Image{}, fmt.Errorf("building image %s: cancelled: %w", req.Name, err)
		}
		return api.Image{}, fmt.Errorf("building image %s: %w", req.Name, err)
	}
	final := filepath.Join(b.ImagesDir, req.Name)
	if err := os.MkdirAll(b.ImagesDir, 0o755); err != nil {
		return api.Image{}, fmt.Errorf("creating images dir: %w", err)
	}
	if _, err := os.Stat(final); err == nil {
		return api.Image{}, api.AlreadyExists("image directory %s appeared during the build", final).
			WithFix("pick another name")
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return api.Image{}, err
	}
	if err := os.Rename(staging, final); err != nil {
		return api.Image{}, fmt.Errorf("moving the finished image into place: %w", err)
	}
	r.Success()
	return img, nil
}

func (b *Maker) logger() *slog.Logger {
	if b.Log != nil {
		return b.Log
	}
	return slog.New(slog.DiscardHandler)
}

func (bd *makeRun) run(ctx context.Context) (api.Image, error) {
	type step struct {
		name string
		fn   func(context.Context) error
	}
	steps := []step{{StageDebootstrap, bd.debootstrap}, {StageKernel, bd.kernel}, {image.StageVmlinux, bd.vmlinux}}
	for _, d := range feature.Default.Of(bd.req.With) {
		steps = append(steps, step{d.Name, func(ctx context.Context) error { return bd.feature(ctx, d) }})
	}
	steps = append(steps, step{StageBake, bd.bake}, step{StageRootfs, bd.rootfs}, step{image.StageWorkSeed, bd.workSeed})
	for _, s := range steps {
		if err := ctx.Err(); err != nil {
			return api.Image{}, err
		}
		if err := progress.Run(bd.rep, s.name, func() error { return s.fn(ctx) }); err != nil {
			return api.Image{}, err
		}
	}
	// The tree and root's home are in the filesystems now; drop them
	// before anything is fingerprinted or moved into place.
	for _, d := range []string{bd.root, bd.home} {
		if err := image.RemoveStaging(d); err != nil {
			return api.Image{}, err
		}
	}
	var img api.Image
	err := progress.Run(bd.rep, image.StageFingerprint, func() error {
		var err error
		img, err = bd.metadata()
		return err
	})
	return img, err
}

func (bd *makeRun) debootstrap(ctx context.Context) error {
	pkgs := append(append([]string{}, BasePackages...), bd.req.Packages...)
	bd.rep.Detail(fmt.Sprintf("%s from %s", bd.req.Suite, bd.req.Mirror))
	// Signatures always: no unverified fallback when the keyring is missing.
	return run(ctx, bd.log, nil, bd.debootstrapBin(), "--variant=minbase", "--force-check-gpg",
		"--keyring="+bd.keyring(), "--include="+strings.Join(pkgs, ","), bd.req.Suite, bd.root, bd.req.Mirror)
}

// initramfsModules are forced into the initramfs: the cloud kernel has the
// virtio transports and devices as modules, and the root disk is virtio.
var initramfsModules = []string{
	"virtio_mmio", "virtio_pci", "virtio_blk", "virtio_net", "virtio_console",
	"vsock", "vmw_vsock_virtio_transport_common", "vmw_vsock_virtio_transport",
}

// policyRCD forbids maintainer scripts from starting services in the chroot.
const policyRCD = "#!/bin/sh\n# banger image build: no service starts in the chroot\nexit 101\n"

func (bd *makeRun) kernel(ctx context.Context) error {
	if err := bd.ch.mount(); err != nil {
		return err
	}
	if err := writeFile(bd.root, "usr/sbin/policy-rc.d", 0o755, []byte(policyRCD)); err != nil {
		return err
	}
	mods := "# banger: virtio drivers for microVM boot\n" + strings.Join(initramfsModules, "\n") + "\n"
	if err := writeFile(bd.root, "etc/initramfs-tools/modules", 0o644, []byte(mods)); err != nil {
		return err
	}
	if err := bd.aptInstall(ctx, KernelPackage); err != nil {
		return err
	}
	kernels, _ := filepath.Glob(filepath.Join(bd.root, "boot", "vmlinuz-*"))
	if len(kernels) != 1 {
		return fmt.Errorf("expected one kernel in /boot after installing %s, found %d", KernelPackage, len(kernels))
	}
	bd.kver = strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	initrd := filepath.Join(bd.root, "boot", "initrd.img-"+bd.kver)
	if err := image.CopyFile(kernels[0], filepath.Join(bd.staging, image.KernelFile)); err != nil {
		return err
	}
	if err := image.CopyFile(initrd, filepath.Join(bd.staging, image.InitrdFile)); err != nil {
		return fmt.Errorf("copying the initramfs (was it generated?): %w", err)
	}
	mmio, err := bd.initrdHas(ctx, "virtio_mmio.ko")
	if err != nil {
		return err
	}
	bd.mmio = mmio
	bd.rep.Detail("kernel " + bd.kver)
	return nil
}

// aptInstall installs packages in the chroot without recommends.
func (bd *makeRun) aptInstall(ctx context.Context, pkgs ...string) error {
	lists, _ := filepath.Glob(filepath.Join(bd.root, "var/lib/apt/lists/*Packages*"))
	if len(lists) == 0 {
		if err := bd.ch.run(ctx, nil, "apt-get", "update", "-q"); err != nil {
			return err
		}
	}
	args := append([]string{"apt-get", "install", "-y", "-q", "--no-install-recommends"}, pkgs...)
	return bd.ch.run(ctx, nil, args...)
}

// initrdHas reports whether the image's initramfs lists a file named name.
func (bd *makeRun) initrdHas(ctx context.Context, name string) (bool, error) {
	out, err := outputOf(ctx, "chroot", bd.root, "lsinitramfs", "/boot/initrd.img-"+bd.kver)
	if err != nil {
		return false, fmt.Errorf("listing the initramfs: %w", err)
	}
	for _, line := range strings.Split(out, "\n") {
		if filepath.Base(line) == name {
			return true, nil
		}
	}
	return false, nil
}

func (bd *makeRun) vmlinux(context.Context) error {
	n, err := image.ExtractVmlinux(filepath.Join(bd.staging, image.KernelFile), filepath.Join(bd.staging, image.VmlinuxFile))
	if err != nil {
		return err
	}
	bd.rep.Detail(fmt.Sprintf("%d MiB", n>>20))
	return nil
}

// feature runs a feature's script in the chroot as root, the host's CA
// bundle handed to it (hosts behind a TLS proxy); neither is left in the
// image. A feature with npm packages has them installed by npmInstall, in
// a sandbox, between the script's deps and config steps.
func (bd *makeRun) feature(ctx context.Context, d feature.Descriptor) error {
	script := "tmp/banger-feature-" + d.Name + ".sh"
	if err := writeFile(bd.root, script, 0o755, d.Script); err != nil {
		return err
	}
	defer os.Remove(filepath.Join(bd.root, script))
	var env []string
	if ca, err := os.ReadFile(feature.HostCABundle); err == nil {
		if err := writeFile(bd.root, "tmp/banger-host-ca.crt", 0o644, ca); err != nil {
			return err
		}
		defer os.Remove(filepath.Join(bd.root, "tmp/banger-host-ca.crt"))
		env = append(env, feature.HostCAEnv+"=/tmp/banger-host-ca.crt")
	}
	if len(d.NPM) == 0 {
		if err := bd.ch.run(ctx, env, "/bin/sh", "/"+script); err != nil {
			return api.Unavailable("installing %s failed: %w", d.Name, err).WithFix(d.ScriptFix)
		}
		return nil
	}
	// npm's packages run their install scripts: not as root on the host.
	for _, step := range []string{"deps", "npm", "config"} {
		var err error
		if step == "npm" {
			err = bd.npmInstall(ctx, d)
		} else {
			err = bd.ch.run(ctx, append(env, "BANGER_STEP="+step), "/bin/sh", "/"+script)
		}
		if err != nil {
			return api.Unavailable("installing %s (%s) failed: %w", d.Name, step, err).WithFix(d.ScriptFix)
		}
	}
	return nil
}

// errNoKernel is returned by metadata when the kernel step left nothing.
var errNoKernel = errors.New("no kernel version recorded")
