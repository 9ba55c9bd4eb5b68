package main

import (
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestDaemonMetrics(t *testing.T) {
	cfg, _ := startDaemon(t)
	if code, _, stderr := cli(t, cfg, "vm", "create", "--name", "m1"); code != 0 {
		t.Fatalf("vm create: %d %s", code, stderr)
	}
	code, stdout, stderr := cli(t, cfg, "daemon", "metrics")
	if code != 0 {
		t.Fatalf("daemon metrics: %d %s", code, stderr)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(stdout))
	if err != nil {
		t.Fatalf("stdout is not the Prometheus text format: %v\n%s", err, stdout)
	}
	if fams["banger_vms"] == nil || fams["banger_operations_total"] == nil || fams["banger_stage_duration_seconds"] == nil {
		t.Errorf("families missing from:\n%s", stdout)
	}
	if code, _, stderr := cli(t, cfg, "--json", "daemon", "metrics"); code == 0 || !strings.Contains(stderr, "drop --json") {
		t.Errorf("--json: %d %s, want a refusal with the fix", code, stderr)
	}
}
