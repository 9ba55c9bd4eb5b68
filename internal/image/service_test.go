package image_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/imagetest"
)

// Without a maker of images from images, build and promote are
// Unavailable (with a fix) before anything is looked up or made.
func TestBuildPromoteWithoutBuilds(t *testing.T) {
	dir := t.TempDir()
	st := imagetest.Store(t)
	svc := &image.Service{Store: st, ImagesDir: filepath.Join(dir, "images")}
	_, berr := svc.Build(context.Background(), api.ImageBuildRequest{Name: "x", From: "base"}, nil)
	_, perr := svc.Promote(context.Background(), api.ImagePromoteRequest{Name: "x", VM: "dev"}, nil)
	for _, err := range []error{berr, perr} {
		var ae *api.Error
		if api.KindOf(err) != api.KindUnavailable || !errors.As(err, &ae) || ae.FixLine() == "" {
			t.Errorf("err = %v, want Unavailable with a fix", err)
		}
	}
}
