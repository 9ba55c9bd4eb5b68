package build

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"time"

	"banger/internal/api"
	"banger/internal/image"
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
// refused with the fix "stop it first: banger vm stop VM". On failure nothing is
// left in the images dir and the staging files are removed. The caller
// stores the returned image.
func (bd *Builder) Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error) {
	if err := names.Validate(req.Name); err != nil {
		return api.Image{}, fmt.Errorf("image name: %w", err)
	}
	if req.VM == "" {
		return api.Image{}, api.Invalid("image promote needs a vm").WithFix("banger image promote VM NAME")
	}
	v, err := bd.Images.Store.GetVM(ctx, req.VM)
	if err != nil {
		return api.Image{}, err
	}
	if v.Runtime.State == api.VMRunning || v.Runtime.State == api.VMStarting {
		return api.Image{}, api.FailedPrecondition("vm %q is running: its disks change while it runs", v.Name).
			WithFix("stop it first").WithAction("vm stop", v.Name)
	}
	parent, err := bd.Images.Store.GetImage(ctx, v.ImageID)
	if err != nil {
		return api.Image{}, fmt.Errorf("vm %s: its image: %w", v.Name, err)
	}
	r := revert.New()
	defer r.Fail()
	staging, err := bd.Images.NewStaging(req.Name, r)
	if err != nil {
		return api.Image{}, err
	}
	start := time.Now()
	img, err := bd.promoteInto(ctx, req, v, parent, staging, progress.Logged(rep, bd.logger().With("image", req.Name)))
	if err != nil {
		if ctx.Err() != nil {
			return api.Image{}, fmt.Errorf("promoting vm %s: cancelled: %w", v.Name, err)
		}
		return api.Image{}, fmt.Errorf("promoting vm %s: %w", v.Name, err)
	}
	r.Success()
	bd.logger().Info("vm promoted", "vm", v.Name, "image", img.Name, "duration", time.Since(start).Round(time.Millisecond))
	return img, nil
}

func (bd *Builder) promoteInto(ctx context.Context, req api.ImagePromoteRequest, v api.VM, parent api.Image,
	staging string, rep progress.Reporter) (api.Image, error) {
	rootfs, seed := filepath.Join(staging, image.RootfsFile), filepath.Join(staging, image.WorkSeedFile)
	err := progress.Run(rep, StageCapture, func() error {
		work := ""
		if req.WithWorkDisk {
			work = seed
		}
		if err := bd.Guests.ExportDisks(ctx, v.Name, rootfs, work); err != nil {
			return err
		}
		if err := resetIdentity(ctx, rootfs); err != nil {
			return err
		}
		rep.Detail(fmt.Sprintf("rootfs %d MiB", image.FileSize(rootfs)>>20))
		return nil
	})
	if err != nil {
		return api.Image{}, err
	}
	err = progress.Run(rep, image.StageWorkSeed, func() error {
		if req.WithWorkDisk {
			rep.Detail("from the vm's work disk")
			return shrinkWrap(ctx, seed)
		}
		if parent.WorkSeed == "" {
			return image.SeedFromRootfs(ctx, staging)
		}
		rep.Detail("the parent's")
		return image.CopyFile(parent.WorkSeed, seed)
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
	// image.SeedFromRootfs leaves a build.log; keep the dir to the artefacts.
	os.Remove(filepath.Join(staging, image.BuildLogFile))
	err = progress.Run(rep, image.StageFingerprint, func() error {
		img, err = image.Finish(bd.Images.ImagesDir, staging, img)
		if err == nil {
			rep.Detail(img.Fingerprint[:16])
		}
		return err
	})
	return img, err
}
