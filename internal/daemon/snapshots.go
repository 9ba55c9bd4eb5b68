package daemon

import (
	"context"
	"fmt"
	"net/http"

	"banger/internal/api"
	"banger/internal/progress"
)

// Snapshots, forks and warm images: thin handlers over SnapshotService.

func (d *Daemon) createSnapshot(w http.ResponseWriter, r *http.Request) error {
	var req api.SnapshotCreateRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.VM == "" {
		return api.Invalid("a snapshot needs the VM to take it from").WithFix("name a running VM: banger snapshot create VM [NAME]")
	}
	return d.begin(w, "snapshot.create", req.VM, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return d.snaps.CreateSnapshot(ctx, req, rep)
	})
}

func (d *Daemon) listSnapshots(w http.ResponseWriter, r *http.Request) error {
	return serveList(w, r, d.snaps.ListSnapshots)
}

func (d *Daemon) getSnapshot(w http.ResponseWriter, r *http.Request) error {
	return serveNamed(w, r, d.snaps.GetSnapshot)
}

func (d *Daemon) deleteSnapshot(w http.ResponseWriter, r *http.Request) error {
	if err := d.snaps.DeleteSnapshot(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// forkVM begins vm.fork: no host path is named, so any socket peer may.
func (d *Daemon) forkVM(w http.ResponseWriter, r *http.Request) error {
	var req api.VMForkRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if req.Source == "" {
		return api.Invalid("a fork needs a source").WithFix("name a snapshot or a running VM: banger vm fork VM|SNAPSHOT")
	}
	if req.Count < 0 || req.Count > api.MaxForkCount {
		return api.Invalid("fork count %d is not from 1 to %d", req.Count, api.MaxForkCount).
			WithFix(fmt.Sprintf("fork at most %d VMs at a time (--count)", api.MaxForkCount))
	}
	return d.begin(w, "vm.fork", req.Source, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return d.snaps.Fork(ctx, req, rep)
	})
}

// warmImage begins image.warm for the image in the path; a body naming
// another image is refused.
func (d *Daemon) warmImage(w http.ResponseWriter, r *http.Request) error {
	var req api.ImageWarmRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	name := r.PathValue("name")
	if req.Image != "" && req.Image != name {
		return api.Invalid("the body names image %q but the path %q", req.Image, name).
			WithFix("leave image out of the body, or make it match the path")
	}
	req.Image = name
	return d.begin(w, "image.warm", name, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return d.snaps.WarmImage(ctx, req, rep)
	})
}

func (d *Daemon) unwarmImage(w http.ResponseWriter, r *http.Request) error {
	if err := d.snaps.UnwarmImage(r.Context(), r.PathValue("name")); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

// withWarm fills each image's Warm from the snapshot service.
func (d *Daemon) withWarm(ctx context.Context, imgs []api.Image) ([]api.Image, error) {
	warm, err := d.snaps.WarmInfo(ctx)
	if err != nil {
		return nil, err
	}
	for i := range imgs {
		if wi, ok := warm[imgs[i].ID]; ok {
			imgs[i].Warm = &wi
		}
	}
	return imgs, nil
}
