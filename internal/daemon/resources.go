package daemon

import (
	"context"
	"net/http"

	"banger/internal/api"
	"banger/internal/progress"
)

// serveList answers with what list returns (an empty list as [], never null).
func serveList[T any](w http.ResponseWriter, r *http.Request, list func(context.Context) ([]T, error)) error {
	l, err := list(r.Context())
	if err != nil {
		return err
	}
	if l == nil {
		l = []T{}
	}
	writeJSON(w, http.StatusOK, l)
	return nil
}

// serveNamed answers with what get returns for the {name} in the path.
func serveNamed[T any](w http.ResponseWriter, r *http.Request, get func(context.Context, string) (T, error)) error {
	v, err := get(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

func (d *Daemon) listImages(w http.ResponseWriter, r *http.Request) error {
	return serveList(w, r, func(ctx context.Context) ([]api.Image, error) {
		imgs, err := d.images.List(ctx)
		if err != nil {
			return nil, err
		}
		return d.withWarm(ctx, imgs)
	})
}

func (d *Daemon) getImage(w http.ResponseWriter, r *http.Request) error {
	return serveNamed(w, r, func(ctx context.Context, name string) (api.Image, error) {
		img, err := d.images.Get(ctx, name)
		if err != nil {
			return api.Image{}, err
		}
		imgs, err := d.withWarm(ctx, []api.Image{img})
		if err != nil {
			return api.Image{}, err
		}
		return imgs[0], nil
	})
}

func (d *Daemon) deleteImage(w http.ResponseWriter, r *http.Request) error {
	force := queryBool(r, "force")
	if err := d.images.Delete(r.Context(), r.PathValue("name"), force); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, struct{}{})
	return nil
}

func (d *Daemon) listVMs(w http.ResponseWriter, r *http.Request) error {
	return serveList(w, r, d.vms.List)
}

func (d *Daemon) getVM(w http.ResponseWriter, r *http.Request) error {
	return serveNamed(w, r, d.vms.Detail)
}

// vmAction serves start/stop/restart, which share a shape.
func (d *Daemon) vmAction(kind string, call func(VMService, context.Context, string, progress.Reporter) (api.VM, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		return d.begin(w, kind, name, func(ctx context.Context, rep progress.Reporter) (any, error) {
			return call(d.vms, ctx, name, rep)
		})
	}
}

func (d *Daemon) deleteVM(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	return d.begin(w, "vm.delete", name, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return nil, d.vms.Delete(ctx, name, rep)
	})
}

func (d *Daemon) editVM(w http.ResponseWriter, r *http.Request) error {
	var req api.VMEditRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	vm, err := d.vms.Edit(r.Context(), r.PathValue("name"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, vm)
	return nil
}

func (d *Daemon) setVMLifetime(w http.ResponseWriter, r *http.Request) error {
	var req api.VMLifetimeRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	vm, err := d.vms.SetLifetime(r.Context(), r.PathValue("name"), req)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, vm)
	return nil
}

// vmDiff writes a VM's workspace diff as text: guest-written bytes, served
// as text/plain with nosniff so no browser renders them.
func (d *Daemon) vmDiff(w http.ResponseWriter, r *http.Request) error {
	patch, err := d.vms.Diff(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(patch)
	return nil
}

func (d *Daemon) vmStats(w http.ResponseWriter, r *http.Request) error {
	return serveNamed(w, r, d.vms.Stats)
}

func queryBool(r *http.Request, key string) bool {
	switch r.URL.Query().Get(key) {
	case "1", "true", "yes":
		return true
	}
	return false
}

// named is a request naming what it makes (the operation's target).
type named interface {
	api.ImageCreateRequest | api.ImageRegisterRequest | api.ImageBuildRequest | api.ImagePromoteRequest | api.VMCreateRequest
}

// longOp serves a POST whose JSON body is a request R and whose work is a
// long operation of that kind on the thing R names.
func longOp[R named, T any](d *Daemon, kind string, work func(context.Context, R, progress.Reporter) (T, error)) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req R
		if err := decodeBody(r, &req); err != nil {
			return err
		}
		return d.begin(w, kind, targetOf(req), func(ctx context.Context, rep progress.Reporter) (any, error) {
			return work(ctx, req, rep)
		})
	}
}

// registerImage begins image register: its artefacts are host paths the
// daemon opens as root, so only a root peer may name them (checkHostPaths).
func (d *Daemon) registerImage(w http.ResponseWriter, r *http.Request) error {
	var req api.ImageRegisterRequest
	if err := decodeBody(r, &req); err != nil {
		return err
	}
	if err := checkHostPaths(r, "image register", req.HostPaths(),
		"run it as root (sudo banger image register …), or build the image with banger image build / create instead"); err != nil {
		return err
	}
	return d.begin(w, "image.register", req.Name, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return d.images.Register(ctx, req, rep)
	})
}

// buildImage begins image build. Its files come in the request (read by the
// client as its user, up to api.MaxBuildUpload); host paths (old clients)
// are accepted from a root peer only.
func (d *Daemon) buildImage(w http.ResponseWriter, r *http.Request) error {
	var req api.ImageBuildRequest
	if err := DecodeRequestLimit(r.Body, &req, api.MaxBuildBody); err != nil {
		return err
	}
	if n := req.UploadBytes(); n > api.MaxBuildUpload {
		return api.Invalid("the build's files are %d MiB together, more than the %d MiB limit", n>>20, api.MaxBuildUpload>>20).
			WithFix("download large files inside --script (curl, apt) or put them in a VM and promote it")
	}
	if err := checkHostPaths(r, "image build", req.HostPaths(),
		"use a banger CLI from this release (it sends the files' contents), or run it as root"); err != nil {
		return err
	}
	return d.begin(w, "image.build", req.Name, func(ctx context.Context, rep progress.Reporter) (any, error) {
		return d.images.Build(ctx, req, rep)
	})
}

func targetOf(req any) string {
	switch r := req.(type) {
	case api.ImageCreateRequest:
		return r.Name
	case api.ImageRegisterRequest:
		return r.Name
	case api.ImageBuildRequest:
		return r.Name
	case api.ImagePromoteRequest:
		return r.Name
	case api.VMCreateRequest:
		return r.Name
	}
	return ""
}
