package daemon

import (
	"context"
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"

	"banger/internal/api"
	"banger/internal/progress"
)

// routes is the one route table.
func (d *Daemon) routes() http.Handler {
	mux := http.NewServeMux()
	h := func(pattern string, f handlerFunc) { mux.Handle(pattern, d.wrap(f)) }

	h("GET /v1/status", d.status)
	h("POST /v1/shutdown", d.shutdownHandler)
	h("GET /v1/doctor", d.doctor)
	h("GET /v1/web", d.webInfo)
	h("GET /v1/metrics", d.metricsHandler)

	h("GET /v1/images", d.listImages)
	h("GET /v1/images/{name}", d.getImage)
	h("POST /v1/images", longOp(d, "image.create", d.images.Create))
	h("POST /v1/images/register", d.registerImage)
	h("POST /v1/images/build", d.buildImage)
	h("POST /v1/images/promote", longOp(d, "image.promote", d.images.Promote))
	h("DELETE /v1/images/{name}", d.deleteImage)
	h("POST /v1/images/{name}/warm", d.warmImage)
	h("DELETE /v1/images/{name}/warm", d.unwarmImage)

	h("GET /v1/snapshots", d.listSnapshots)
	h("GET /v1/snapshots/{name}", d.getSnapshot)
	h("POST /v1/snapshots", d.createSnapshot)
	h("DELETE /v1/snapshots/{name}", d.deleteSnapshot)

	h("GET /v1/vms", d.listVMs)
	h("GET /v1/vms/{name}", d.getVM)
	h("POST /v1/vms", longOp(d, "vm.create", d.vms.Create))
	h("POST /v1/vms/fork", d.forkVM)
	h("POST /v1/vms/{name}/start", d.vmAction("vm.start", VMService.Start))
	h("POST /v1/vms/{name}/stop", d.vmAction("vm.stop", VMService.Stop))
	h("POST /v1/vms/{name}/restart", d.vmAction("vm.restart", VMService.Restart))
	h("DELETE /v1/vms/{name}", d.deleteVM)
	h("PATCH /v1/vms/{name}", d.editVM)
	h("PATCH /v1/vms/{name}/lifetime", d.setVMLifetime)
	h("GET /v1/vms/{name}/diff", d.vmDiff)
	h("GET /v1/vms/{name}/logs", d.vmLogs)
	h("POST /v1/vms/{name}/exec", d.vmExec)
	h("GET /v1/vms/{name}/stats", d.vmStats)
	h("GET /v1/vms/{name}/policy", d.getNetPolicy)
	h("PUT /v1/vms/{name}/policy", d.setNetPolicy)
	h("POST /v1/vms/{name}/known-hosts", d.knownHosts)
	h("POST /v1/vms/{name}/forwards", d.addForward)
	h("DELETE /v1/vms/{name}/forwards/{port}", d.removeForward)

	h("GET /v1/operations", d.listOperations)
	h("GET /v1/operations/{id}", d.getOperation)
	h("GET /v1/operations/{id}/output", d.operationOutput)
	h("POST /v1/operations/{id}/cancel", d.cancelOperation)

	h("/", func(w http.ResponseWriter, r *http.Request) error {
		return api.NotFound("no route %s %s", r.Method, r.URL.Path).
			WithFix("see the route list in internal/api/requests.go")
	})
	return mux
}

// begin starts a long operation: work runs in its own goroutine with a
// context derived from the daemon's lifetime, and the caller gets 202 with
// the operation at once.
func (d *Daemon) begin(w http.ResponseWriter, kind, target string, work func(ctx context.Context, rep progress.Reporter) (any, error)) error {
	op := d.tracker.Begin(kind, target)
	ctx, cancel := context.WithCancel(d.opsCtx)
	op.SetCancel(cancel)
	log := d.log.With("op", op.ID(), "kind", kind, "target", target)
	d.opsWG.Add(1)
	go func() {
		defer d.opsWG.Done()
		defer cancel()
		start := time.Now()
		log.Info("operation started")
		res, err := work(ctx, d.metrics.Reporter(kind, op))
		op.Finish(res, err)
		d.metrics.OperationDone(kind, err)
		if err != nil {
			log.Warn("operation failed", "err", err, "duration", time.Since(start))
			return
		}
		log.Info("operation succeeded", "duration", time.Since(start))
	}()
	writeJSON(w, http.StatusAccepted, op.Snapshot())
	return nil
}

func (d *Daemon) status(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	vms, err := d.vms.List(ctx)
	if err != nil {
		return err
	}
	images, err := d.images.List(ctx)
	if err != nil {
		return err
	}
	st := api.DaemonStatus{
		Version: d.opts.Version, APIVersion: api.APIVersion, PID: os.Getpid(),
		StateDir: d.cfg.StateDir, SocketPath: d.cfg.SocketPath, ConfigPath: d.cfg.Path,
		StartedAt: d.started, VMs: len(vms), Images: len(images),
	}
	info := d.vms.Info()
	st.Engine, st.Accel, st.DiskDriver = info.Engine, info.Accel, info.DiskDriver
	for _, vm := range vms {
		if vm.Runtime.State == api.VMRunning {
			st.Running++
		}
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

func (d *Daemon) shutdownHandler(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, struct{}{})
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	d.requestShutdown()
	return nil
}

func (d *Daemon) doctor(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, runDoctor(r.Context(), d.cfg))
	return nil
}

func (d *Daemon) listOperations(w http.ResponseWriter, r *http.Request) error {
	writeJSON(w, http.StatusOK, d.tracker.List())
	return nil
}

func (d *Daemon) getOperation(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	q := r.URL.Query()
	var version uint64
	if v := q.Get("version"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return api.Invalid("version %q is not a number", v)
		}
		version = n
	}
	wait := time.Duration(0)
	if v := q.Get("wait"); v != "" {
		dur, err := time.ParseDuration(v)
		if err != nil || dur < 0 {
			return api.Invalid("wait %q is not a duration like 30s", v)
		}
		wait = min(dur, api.MaxOpWait)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	op, ver, err := d.tracker.Wait(ctx, id, version)
	if err != nil && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
		return err
	}
	w.Header().Set(api.OpVersionHeader, strconv.FormatUint(ver, 10))
	writeJSON(w, http.StatusOK, op)
	return nil
}

func (d *Daemon) operationOutput(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if _, ok := d.tracker.Get(id); !ok {
		return api.NotFound("operation %q not found", id)
	}
	from := 0
	if v := r.URL.Query().Get("from"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return api.Invalid("from %q is not a line index", v)
		}
		from = n
	}
	lines, next := d.tracker.Output(id, from)
	if lines == nil {
		lines = []string{}
	}
	writeJSON(w, http.StatusOK, api.OperationOutput{Lines: lines, Next: next})
	return nil
}

func (d *Daemon) cancelOperation(w http.ResponseWriter, r *http.Request) error {
	id := r.PathValue("id")
	if err := d.tracker.Cancel(id); err != nil {
		return err
	}
	d.log.Info("operation cancel requested", "op", id)
	op, _ := d.tracker.Get(id)
	writeJSON(w, http.StatusOK, op)
	return nil
}
