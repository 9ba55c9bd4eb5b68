package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/client"
)

func webCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "web", Short: "The browser UI"}
	cmd.AddCommand(noArgsCmd("url", "Print the URL that logs a browser into the web UI (it carries the token)", e.webURL))
	return cmd
}

// webURL asks the daemon (starting it if needed) for the login URL.
func (e *env) webURL(ctx context.Context) error {
	return show(ctx, e, func(c *client.Client) (api.WebInfo, error) { return c.WebInfo(ctx) },
		func(w io.Writer, info api.WebInfo) { fmt.Fprintln(w, info.LoginURL) })
}
