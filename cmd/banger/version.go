package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/buildinfo"
	"banger/internal/client"
)

// versionInfo is `banger version --json`.
type versionInfo struct {
	Client string `json:"client"`
	Commit string `json:"commit,omitempty"`
	Daemon string `json:"daemon,omitempty"`
}

func versionCmd(e *env) *cobra.Command {
	return noArgsCmd("version", "Print the client's and (if it answers) the daemon's version", e.version)
}

// version never starts the daemon; it asks one that is already running.
func (e *env) version(ctx context.Context) error {
	info := versionInfo{Client: buildinfo.Version, Commit: buildinfo.Commit}
	if cfg, err := e.config(); err == nil {
		sctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		if st, err := client.New(cfg.SocketPath).Status(sctx); err == nil {
			info.Daemon = st.Version
		}
		cancel()
	}
	if e.jsonOut {
		return e.printJSON(info)
	}
	fmt.Fprintf(e.stdout, "banger  %s\n", buildinfo.String())
	if info.Daemon != "" {
		fmt.Fprintf(e.stdout, "bangerd %s\n", info.Daemon)
	} else {
		fmt.Fprintln(e.stdout, "bangerd not running")
	}
	return nil
}
