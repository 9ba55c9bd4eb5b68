package image

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"banger/internal/api"
	"banger/internal/names"
	"banger/internal/progress"
	"banger/internal/revert"
)

// promoteRecipe is what went into a promoted image (api.Image.Recipe).
type promoteRecipe struct {
	Kind              string `json:"kind"` // "promote"
	VM                string `json:"vm"`
	Parent            string `json:"parent"`
	ParentFingerprint string `json:"parent_fingerprint"`
	WorkDisk          bool   `json:"with_work_disk,omitempty"`
}

// Promote turns a stopped VM's system disk (and, with WithWorkDisk, its
// work disk as the work-seed; else the parent's seed) into image req.Name
// with its own fingerprint and Parent = the VM's image. A running VM is
// refused with the fix "banger vm stop VM first". On failure nothing is
// registered and the staging files are removed.
func (s *Service) Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error) {
	if s.Guests == nil {
		return api.Image{}, api.Unavailable("image promote needs the VM manager, which this daemon lacks").
			WithFix("run it through bangerd")
	}
	if err := names.Validate(req.Name); err != nil {
		return api.Image{}, fmt.Errorf("image name: %w", err)
	}
	if err := s.refuseTaken(ctx, req.Name); err != nil {
		return api.Image{}, err
	}
	if req.VM == "" {
		return api.Image{}, api.Invalid("image promote needs a vm").WithFix("banger image promote VM NAME")
	}
	v, err := s.Store.GetVM(ctx, req.VM)
	if err != nil {
		return api.Image{}, err
	}
	if v.Runtime.State == api.VMRunning || v.Runtime.State == api.VMStarting {
		return api.Image{}, api.FailedPrecondition("vm %q is running: its disks change while it runs", v.Name).
			WithFix("stop it first").WithAction("vm stop", v.Name)
	}
	parent, err := s.Store.GetImage(ctx, v.ImageID)
	if err != nil {
		return api.Image{}, fmt.Errorf("vm %s: its image: %w", v.Name, err)
	}
	staging, err := s.newStaging(req.Name)
	if err != nil {
		return api.Image{}, err
	}
	r := revert.New()
	defer r.Fail()
	r.Add(func() {
		if err := RemoveStaging(staging); err != nil {
			s.logger().Error("removing an aborted promote", "dir", staging, "err", err)
		}
	})
	start := time.Now()
	img, err := s.promoteInto(ctx, req, v, parent, staging, progress.Logged(rep, s.logger().With("image", req.Name)))
	if err != nil {
		if ctx.Err() != nil {
			return api.Image{}, fmt.Errorf("promoting vm %s: cancelled: %w", v.Name, err)
		}
		return api.Image{}, fmt.Errorf("promoting vm %s: %w", v.Name, err)
	}
	r.Success()
	s.logger().Info("vm promoted", "vm", v.Name, "image", img.Name, "duration", time.Since(start).Round(time.Millisecond))
	return img, nil
}

func (s *Service) promoteInto(ctx context.Context, req api.ImagePromoteRequest, v api.VM, parent api.Image,
	staging string, rep progress.Reporter) (api.Image, error) {
	rootfs, seed := filepath.Join(staging, RootfsFile), filepath.Join(staging, WorkSeedFile)
	err := progress.Run(rep, StageCapture, func() error {
		work := ""
		if req.WithWorkDisk {
			work = seed
		}
		if err := s.Guests.ExportDisks(ctx, v.Name, rootfs, work); err != nil {
			return err
		}
		if err := resetIdentity(ctx, rootfs); err != nil {
			return err
		}
		rep.Detail(fmt.Sprintf("rootfs %d MiB", FileSize(rootfs)>>20))
		return nil
	})
	if err != nil {
		return api.Image{}, err
	}
	err = progress.Run(rep, StageWorkSeed, func() error {
		if req.WithWorkDisk {
			rep.Detail("from the vm's work disk")
			return shrinkWrap(ctx, seed)
		}
		if parent.WorkSeed == "" {
			return seedFromRootfs(ctx, staging)
		}
		rep.Detail("the parent's")
		return CopyFile(parent.WorkSeed, seed)
	})
	if err != nil {
		return api.Image{}, err
	}
	img := api.Image{Name: req.Name, Parent: parent.Name, Source: "promote", CreatedAt: time.Now().UTC()}
	err = progress.Run(rep, StageBootSet, func() error {
		var err error
		img.KernelVersion, img.Engines, err = bootSet(ctx, parent, rootfs, staging)
		rep.Detail("kernel " + img.KernelVersion)
		return err
	})
	if err != nil {
		return api.Image{}, err
	}
	img.Features = slices.Clone(parent.Features)
	rec, _ := json.Marshal(promoteRecipe{Kind: "promote", VM: v.Name, Parent: parent.Name,
		ParentFingerprint: parent.Fingerprint, WorkDisk: req.WithWorkDisk})
	img.Recipe = string(rec)
	// seedFromRootfs leaves a build.log; keep the dir to the artefacts.
	os.Remove(filepath.Join(staging, BuildLogFile))
	err = progress.Run(rep, StageFingerprint, func() error {
		img, err = s.finish(ctx, staging, img)
		if err == nil {
			rep.Detail(img.Fingerprint[:16])
		}
		return err
	})
	return img, err
}
