package daemon

import (
	"context"
	"net/http"

	"banger/internal/api"
	"banger/internal/progress"
)

// ImageBuilder is optionally implemented by an ImageService: images made
// from images. Build boots a builder VM, runs a script in it and captures
// it; Promote captures a stopped VM. Both are long operations run like
// ImageService.Create (daemon-lifetime context, progress and script output
// to rep, nothing left behind on failure or cancel).
type ImageBuilder interface {
	Build(ctx context.Context, req api.ImageBuildRequest, rep progress.Reporter) (api.Image, error)
	Promote(ctx context.Context, req api.ImagePromoteRequest, rep progress.Reporter) (api.Image, error)
}

func (d *Daemon) imageBuilder(what string) (ImageBuilder, error) {
	if b, ok := d.images.(ImageBuilder); ok && d.images != nil {
		return b, nil
	}
	return nil, unavailable(what)
}

func (d *Daemon) buildImage(w http.ResponseWriter, r *http.Request) error {
	b, err := d.imageBuilder("image build")
	if err != nil {
		return err
	}
	var req api.ImageBuildRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	return d.begin(w, "image.build", req.Name, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return b.Build(ctx, req, rep)
	})
}

func (d *Daemon) promoteImage(w http.ResponseWriter, r *http.Request) error {
	b, err := d.imageBuilder("image promote")
	if err != nil {
		return err
	}
	var req api.ImagePromoteRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	return d.begin(w, "image.promote", req.Name, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return b.Promote(ctx, req, rep)
	})
}
