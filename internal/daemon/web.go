package daemon

import (
	"context"
	"log/slog"
	"net/http"

	"banger/internal/api"
)

// WebUI is the browser UI served beside the Unix socket (internal/web).
// The daemon serves it from Run until shutdown, when it is shut down
// before the API so that no browser request outlives the store.
type WebUI interface {
	// Serve serves until Shutdown and returns nil after a clean one.
	Serve() error
	// Shutdown ends event streams and terminals and waits for other
	// requests until ctx ends.
	Shutdown(ctx context.Context) error
	// LoginURL is the URL that logs a browser in (it carries the token).
	LoginURL() string
}

// WebFunc builds the web UI around the daemon's own API handler (the one
// the socket serves) and VM service. It is called
// once the services exist. An error does not stop the daemon: it is
// logged and GET /v1/web reports it.
type WebFunc func(apiHandler http.Handler, vms VMService, log *slog.Logger) (WebUI, error)

// startWeb builds the web UI when Options.Web is set; failures are kept
// for GET /v1/web.
func (d *Daemon) startWeb() {
	if d.opts.Web == nil {
		d.webErr = api.FailedPrecondition("this daemon serves no web UI")
		return
	}
	ui, err := d.opts.Web(d.srv.Handler, d.vms, d.log.With("component", "web"))
	if err != nil {
		d.webErr = err
		d.log.Error("web UI not started", "err", err)
		return
	}
	d.web = ui
	d.log.Info("web UI listening", "url", redactToken(ui.LoginURL()))
}

// redactToken cuts the token off a login URL for the log.
func redactToken(u string) string {
	for i := 0; i+6 <= len(u); i++ {
		if u[i:i+6] == "token=" {
			return u[:i+6] + "…"
		}
	}
	return u
}

func (d *Daemon) webInfo(w http.ResponseWriter, r *http.Request) error {
	if d.web == nil {
		return d.webErr
	}
	writeJSON(w, http.StatusOK, api.WebInfo{LoginURL: d.web.LoginURL()})
	return nil
}
