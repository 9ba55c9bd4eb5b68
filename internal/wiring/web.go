package wiring

import (
	"log/slog"
	"net/http"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/web"
)

// WebTokenFile is the web UI's login token in the state dir (0600).
const WebTokenFile = "web.token"

// WebUI is daemon.Options.Web: the browser UI on web_listen, mounting the
// daemon's own API handler. An empty web_listen turns it off.
func WebUI(cfg config.Config) daemon.WebFunc {
	return func(apiHandler http.Handler, vms daemon.VMService, log *slog.Logger) (daemon.WebUI, error) {
		if cfg.WebListen == "" {
			return nil, api.FailedPrecondition("the web UI is off (web_listen is empty)").
				WithFix("set web_listen = \"127.0.0.1:7070\" in " + orDefault(cfg.Path) + " and restart bangerd")
		}
		opts := web.Options{
			Listen: cfg.WebListen, AllowRemote: cfg.WebAllowRemote,
			TokenPath: filepath.Join(cfg.StateDir, WebTokenFile),
			API:       apiHandler, Log: log, Exec: vms.Exec,
		}
		s, err := web.New(opts)
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

func orDefault(path string) string {
	if path == "" {
		return config.DefaultPath
	}
	return path
}
