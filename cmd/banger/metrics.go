package main

import (
	"context"

	"github.com/spf13/cobra"

	"banger/internal/api"
)

// daemonMetricsCmd is `banger daemon metrics`: the daemon's Prometheus
// metrics (the text a scraper reads from the web UI's /metrics) on stdout.
func daemonMetricsCmd(e *env) *cobra.Command {
	return noArgsCmd("metrics", "Print the daemon's Prometheus metrics (text format)", e.daemonMetrics)
}

func (e *env) daemonMetrics(ctx context.Context) error {
	if e.jsonOut {
		return api.Invalid("banger daemon metrics has no JSON output").
			WithFix("drop --json: the Prometheus text format is the stable output (banger daemon metrics | grep banger_)")
	}
	c, err := e.client(ctx)
	if err != nil {
		return err
	}
	return c.Metrics(ctx, e.stdout)
}
