// Package image is banger's image catalogue. An image is a directory
// holding a boot set: the kernel as a bzImage (vmlinuz, for QEMU) and as an
// uncompressed ELF (vmlinux, for Firecracker), the initramfs (initrd.img),
// the root filesystem (rootfs.ext4, the VM's system disk base), the
// work-disk seed (work-seed.ext4, cloned into each VM's /root) and the
// build.log.
//
// It owns that layout, the Service (create, register, build, promote,
// delete, heal — storing what the makers hand back), register, heal,
// fingerprints, staging directories and the build log. The makers live
// below it and hand back an api.Image the Service stores: image/debian
// makes images from nothing (Service.Debian, a FromNothing), image/build
// makes images from images — a builder VM running a script, or a stopped
// VM promoted (Service.Builds, a FromImages). ext4 surgery goes through
// internal/ext4, features through internal/feature. It must not know the
// daemon, VMs or how images are made from Debian or from other images.
//
// What it trusts: not what a builder guest or a chroot prints (the build
// log: capped by build_log_max with one build.log.1, lines bounded on their
// way to the operation and to error messages), nor the filesystems a guest
// wrote (read through internal/ext4, whose doc names its limits).
package image

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"banger/internal/api"
	"banger/internal/progress"
	"banger/internal/store"
)

// FromNothing makes an image from nothing and returns its metadata
// (implemented by image/debian.Maker); the Service stores it.
type FromNothing interface {
	FromDebian(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error)
}

// FromImages makes images from images (implemented by image/build.Builder):
// Build from a parent image through a builder VM running a script,
// Promote from a stopped VM's disks. Each leaves the finished image in
// ImagesDir/<name> (image.Finish) and returns its metadata, or on failure
// leaves nothing; the Service stores it.
type FromImages interface {
	Build(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error)
	Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error)
}

// Service is the daemon's image service: it builds or registers image
// directories and records them in the store, and deletes both. It matches
// daemon.ImageService's method set (asserted in the daemon's wiring, not
// here, to keep internal/image free of the daemon).
type Service struct {
	Store *store.Store
	// Debian makes images from nothing (image create); nil makes that
	// Unavailable.
	Debian    FromNothing
	ImagesDir string
	// StagingDir holds builds in progress, on ImagesDir's filesystem
	// ("" = ImagesDir/../staging).
	StagingDir string
	Log        *slog.Logger
	// Builds makes images from images (image build, image promote); nil
	// makes those Unavailable.
	Builds FromImages
	// BuildLogMax caps a build's build.log (build_log_max); <= 0: no cap.
	BuildLogMax int64

	healMu sync.Mutex // serialises Heal
}

func (s *Service) logger() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// refuseTaken fails fast, before any build work, when the store already
// has an image of that name.
func (s *Service) refuseTaken(ctx context.Context, name string) error {
	if _, err := s.Store.GetImage(ctx, name); err == nil {
		return api.AlreadyExists("image %q already exists", name).
			WithFix("pick another name, or delete it first").WithAction("image delete", name)
	} else if !api.IsNotFound(err) {
		return err
	}
	return nil
}

// Create builds an image from Debian and stores it. If the store refuses
// the record, the built directory is removed.
func (s *Service) Create(ctx context.Context, req api.ImageCreateRequest, rep progress.Reporter) (api.Image, error) {
	if err := s.refuseTaken(ctx, req.Name); err != nil {
		return api.Image{}, err
	}
	if s.Debian == nil {
		return api.Image{}, api.Unavailable("image create needs the Debian image maker, which this daemon lacks").
			WithFix("run image create through bangerd")
	}
	img, err := s.Debian.FromDebian(ctx, req, rep)
	if err != nil {
		return api.Image{}, err
	}
	return s.store(ctx, img)
}

// Register adopts existing artefacts and stores the image.
func (s *Service) Register(ctx context.Context, req api.ImageRegisterRequest, rep progress.Reporter) (api.Image, error) {
	if err := s.refuseTaken(ctx, req.Name); err != nil {
		return api.Image{}, err
	}
	img, err := Register(ctx, s.ImagesDir, req, rep)
	if err != nil {
		return api.Image{}, err
	}
	return s.store(ctx, img)
}

// Build makes image req.Name from image req.From through a builder VM
// (see image/build) and stores it.
func (s *Service) Build(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error) {
	return s.fromImages(ctx, "build", req.Name, func() (api.Image, error) { return s.Builds.Build(ctx, req, rep) })
}

// Promote makes image req.Name from stopped VM req.VM's disks (see
// image/build) and stores it.
func (s *Service) Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error) {
	return s.fromImages(ctx, "promote", req.Name, func() (api.Image, error) { return s.Builds.Promote(ctx, req, rep) })
}

// fromImages refuses early (no Builds, the name taken), then stores what
// mk hands back.
func (s *Service) fromImages(ctx context.Context, verb, name string, mk func() (api.Image, error)) (api.Image, error) {
	if s.Builds == nil {
		return api.Image{}, api.Unavailable("image %s needs the VM manager, which this daemon lacks", verb).
			WithFix("run image " + verb + " through bangerd")
	}
	if err := s.refuseTaken(ctx, name); err != nil {
		return api.Image{}, err
	}
	img, err := mk()
	if err != nil {
		return api.Image{}, err
	}
	return s.store(ctx, img)
}

func (s *Service) store(ctx context.Context, img api.Image) (api.Image, error) {
	if err := s.Store.CreateImage(ctx, &img); err != nil {
		if rerr := os.RemoveAll(img.Dir); rerr != nil {
			s.logger().Error("removing image dir after a failed insert", "dir", img.Dir, "err", rerr)
		}
		return api.Image{}, err
	}
	s.logger().Info("image stored", "image", img.Name, "fingerprint", img.Fingerprint, "dir", img.Dir)
	return img, nil
}

// List returns every image's record.
func (s *Service) List(ctx context.Context) ([]api.Image, error) { return s.Store.ListImages(ctx) }

// Get returns one image's record by name or ID.
func (s *Service) Get(ctx context.Context, name string) (api.Image, error) {
	return s.Store.GetImage(ctx, name)
}

// Delete removes an image's record and directory. It refuses while VMs use
// the image, and (unless force) while other images name it as their parent.
func (s *Service) Delete(ctx context.Context, name string, force bool) error {
	img, err := s.Store.GetImage(ctx, name)
	if err != nil {
		return err
	}
	vms, err := s.Store.VMsUsingImage(ctx, img.ID)
	if err != nil {
		return err
	}
	if len(vms) > 0 {
		return api.FailedPrecondition("image %q is in use by vm(s) %s", img.Name, strings.Join(vms, ", ")).
			WithFix("delete those vms first").WithAction("vm delete", vms...)
	}
	children, err := s.Store.ImageChildren(ctx, img.Name)
	if err != nil {
		return err
	}
	if len(children) > 0 && !force {
		return api.FailedPrecondition("image %q is the parent of image(s) %s", img.Name, strings.Join(children, ", ")).
			WithFix("delete those first, or pass --force").WithAction("image delete", "--force", img.Name)
	}
	if err := s.Store.DeleteImage(ctx, img.ID); err != nil {
		return err
	}
	if err := s.removeDir(img); err != nil {
		return err
	}
	s.logger().Info("image deleted", "image", img.Name)
	return nil
}

// removeDir removes a managed image's directory, and only one inside
// ImagesDir: a registered image's originals elsewhere are never touched.
func (s *Service) removeDir(img api.Image) error {
	if !img.Managed || img.Dir == "" {
		return nil
	}
	rel, err := filepath.Rel(s.ImagesDir, img.Dir)
	if err != nil || rel == "." || strings.HasPrefix(rel, "..") || strings.Contains(rel, string(filepath.Separator)) {
		s.logger().Warn("not removing an image dir outside the images dir", "dir", img.Dir)
		return nil
	}
	if err := os.RemoveAll(img.Dir); err != nil {
		return fmt.Errorf("removing image dir %s: %w", img.Dir, err)
	}
	return nil
}
