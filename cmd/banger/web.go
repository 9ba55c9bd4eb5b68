package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"
)

func webCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "web", Short: "The browser UI"}
	cmd.AddCommand(&cobra.Command{
		Use:   "url",
		Short: "Print the URL that logs a browser into the web UI (it carries the token)",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return e.webURL(cmd.Context()) },
	})
	return cmd
}

// webURL asks the daemon (starting it if needed) for the login URL.
func (e *env) webURL(ctx context.Context) error {
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	info, err := c.WebInfo(ctx)
	if err != nil {
		return err
	}
	if e.jsonOut {
		return e.printJSON(info)
	}
	fmt.Fprintln(e.stdout, info.LoginURL)
	return nil
}
