package main

import (
	"errors"
	"io"

	"github.com/spf13/cobra"

	"banger/internal/buildinfo"
	"banger/internal/mcp"
)

func mcpCmd(e *env) *cobra.Command {
	return &cobra.Command{
		Use:   "mcp",
		Short: "Serve banger's VMs to an AI agent over the Model Context Protocol (stdio)",
		Long: "Speaks MCP (JSON-RPC over stdin/stdout) for an MCP client such as Claude Code, Cursor or the MCP\n" +
			"inspector: tools to list, create and delete VMs, run commands, read, write and list files, copy\n" +
			"trees in and out, and forward ports. It talks to the daemon like the CLI (starting it if needed).\n" +
			"Add it to a client's config as the command \"banger\" with the argument \"mcp\".",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			err := mcp.Run(cmd.Context(), e.client, buildinfo.String(), e.stdin, e.stdout)
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		},
	}
}
