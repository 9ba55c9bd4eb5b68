package image

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"banger/internal/api"
	"banger/internal/image/vmlinux"
	"banger/internal/progress"
	"banger/internal/vmm"
)

// StageUpgrade is the stage Heal reports when an image needs work.
const StageUpgrade = "image upgrade"

// PatchHealImages is the data patch HealAll records in the store.
const PatchHealImages = "heal images from older bangers"

// HealAll is a data patch, run by the daemon's wiring at start-up before
// anything is served: every image an older banger recorded gets what it
// lacks (Heal), so that VM create never has to. It runs once per database:
// when every image is complete it records PatchHealImages and later starts
// skip it. An image that cannot be healed (its rootfs is gone) is named in
// the error, nothing is recorded, and the next start tries again; its VMs
// are refused at create with the reason.
func (s *Service) HealAll(ctx context.Context) error {
	done, err := s.Store.PatchApplied(ctx, PatchHealImages)
	if err != nil || done {
		return err
	}
	imgs, err := s.Store.ListImages(ctx)
	if err != nil {
		return err
	}
	var errs []error
	for _, img := range imgs {
		if _, err := s.Heal(ctx, img, nil); err != nil {
			errs = append(errs, fmt.Errorf("bringing image %s up to date: %w", img.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return s.Store.RecordPatch(ctx, PatchHealImages)
}

// NeedsHeal reports whether an image lacks something newer banger records
// for every image: a work-seed, a fingerprint, the engines list, or the
// vmlinux an engine it lists needs.
func NeedsHeal(img api.Image) bool {
	return img.WorkSeed == "" || img.Fingerprint == "" || len(img.Engines) == 0 ||
		(img.Vmlinux == "" && slices.Contains(img.Engines, vmm.Firecracker))
}

// Heal brings an image recorded by an older banger up to date (HealAll
// runs it over every image at daemon start): a work-seed from the rootfs's /root, the vmlinux
// extracted from the bzImage, the engines list, the features found in the
// rootfs, the sizes, the kernel version and a fingerprint. New files go
// into the image's directory (ImagesDir/<name> for images without one).
// It runs once per image: under a lock, re-reading the record, and storing
// the result with UpdateImage. A complete image is returned as is, without
// a stage on rep.
func (s *Service) Heal(ctx context.Context, img api.Image, rep progress.Reporter) (api.Image, error) {
	if !NeedsHeal(img) {
		return img, nil
	}
	if rep == nil {
		rep = progress.Nop{}
	}
	s.healMu.Lock()
	defer s.healMu.Unlock()
	cur, err := s.Store.GetImage(ctx, img.ID)
	if err != nil {
		return api.Image{}, err
	}
	if !NeedsHeal(cur) {
		return cur, nil
	}
	done := rep.Stage(StageUpgrade)
	healed, err := s.heal(ctx, cur)
	if err == nil {
		err = s.Store.UpdateImage(ctx, healed)
	}
	if err == nil {
		rep.Detail("added what image " + cur.Name + " lacked")
	}
	done(err)
	if err != nil {
		return api.Image{}, err
	}
	s.logger().Info("image upgraded", "image", healed.Name, "fingerprint", healed.Fingerprint,
		"work_seed", healed.WorkSeed, "vmlinux", healed.Vmlinux, "engines", healed.Engines)
	return healed, nil
}

func (s *Service) heal(ctx context.Context, img api.Image) (api.Image, error) {
	if FileSize(img.Rootfs) == 0 {
		return api.Image{}, api.FailedPrecondition("image %q: its rootfs %s is missing", img.Name, img.Rootfs).
			WithFix("re-register it: banger image delete " + img.Name + " && banger image register " + img.Name + " …")
	}
	dir := img.Dir
	if !img.Managed || dir == "" {
		dir = filepath.Join(s.ImagesDir, img.Name)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return api.Image{}, fmt.Errorf("creating image dir: %w", err)
	}
	made := false
	if img.WorkSeed == "" || FileSize(img.WorkSeed) == 0 {
		out := filepath.Join(dir, WorkSeedFile)
		tmp := out + ".part"
		os.Remove(tmp)
		if err := seedFrom(ctx, img.Rootfs, tmp); err != nil {
			os.Remove(tmp)
			return api.Image{}, fmt.Errorf("making a work-seed from the rootfs: %w", err)
		}
		if err := os.Rename(tmp, out); err != nil {
			return api.Image{}, err
		}
		img.WorkSeed, made = out, true
	}
	bz := false
	if head, err := ReadHead(img.Kernel, 4096); err == nil && vmlinux.IsBzImage(head) {
		bz = true
	}
	if img.Vmlinux == "" && bz {
		out := filepath.Join(dir, VmlinuxFile)
		if _, err := ExtractVmlinux(img.Kernel, out+".part"); err == nil && os.Rename(out+".part", out) == nil {
			img.Vmlinux, made = out, true
		} else {
			os.Remove(out + ".part")
			s.logger().Warn("image upgrade: no vmlinux from the kernel", "image", img.Name, "err", err)
		}
	}
	if !made && dir != img.Dir {
		os.Remove(dir) // only if empty: nothing was made there
	}
	if made && (!img.Managed || img.Dir == "") {
		img.Dir, img.Managed = dir, true
	}
	s.healMetadata(ctx, &img, bz)
	return img, nil
}

// healMetadata fills the engines, features, sizes, kernel version, source
// and fingerprint an image lacks.
func (s *Service) healMetadata(ctx context.Context, img *api.Image, bz bool) {
	if len(img.Engines) == 0 {
		if bz {
			img.Engines = append(img.Engines, vmm.QEMU)
		}
		img.Engines = append(img.Engines, vmm.Firecracker)
	}
	if img.Vmlinux == "" {
		img.Engines = slices.DeleteFunc(img.Engines, func(e string) bool { return e == vmm.Firecracker })
	}
	if len(img.Features) == 0 {
		img.Features = rootfsFeatures(ctx, img.Rootfs)
	}
	for _, f := range []struct {
		path string
		size *int64
	}{{img.Kernel, &img.KernelSize}, {img.Vmlinux, &img.VmlinuxSize}, {img.Initrd, &img.InitrdSize},
		{img.Rootfs, &img.RootfsSize}, {img.WorkSeed, &img.WorkSeedSize}} {
		if f.path != "" {
			*f.size = FileSize(f.path)
		}
	}
	if img.KernelVersion == "" {
		img.KernelVersion = kernelVersion(img.Kernel, img.Vmlinux)
	}
	if img.Source == "" {
		img.Source = "register"
	}
	if img.Fingerprint == "" {
		fp, err := pathsFingerprint("upgrade:"+img.Source, img.Kernel, img.Vmlinux, img.Initrd, img.Rootfs, img.WorkSeed)
		if err != nil {
			s.logger().Warn("image upgrade: fingerprint", "image", img.Name, "err", err)
			fp = "upgraded-" + img.ID
		}
		img.Fingerprint = fp
	}
}

// pathsFingerprint hashes a source description and the bytes of each
// existing file, streaming.
func pathsFingerprint(recipe string, paths ...string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\n", recipe)
	for _, p := range paths {
		if p == "" || FileSize(p) == 0 {
			continue
		}
		if err := hashInto(h, p); err != nil {
			return "", fmt.Errorf("hashing %s: %w", p, err)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
