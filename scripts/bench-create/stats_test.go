package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"banger/internal/api"
)

// A vm.create operation as GET /v1/operations/{id} answers it (recorded,
// trimmed): agent ready ends 15.2 s after the operation began.
const coldOpJSON = `{"id":"a1","kind":"vm.create","target":"bench-cold-0","state":"succeeded",
"stages":[
 {"name":"allocate","started":"2026-11-30T01:00:00.010Z","duration_ns":2000000,"outcome":"ok"},
 {"name":"engine","started":"2026-11-30T01:00:00.200Z","duration_ns":50000000,"outcome":"ok"},
 {"name":"boot","started":"2026-11-30T01:00:00.250Z","duration_ns":9000000000,"outcome":"ok"},
 {"name":"agent ready","started":"2026-11-30T01:00:09.250Z","duration_ns":5950000000,"outcome":"ok"}],
"result":{"name":"bench-cold-0"},
"started":"2026-11-30T01:00:00Z","finished":"2026-11-30T01:00:15.300Z"}`

// A fork of two children, each with its own agent-ready stage.
const forkOpJSON = `{"id":"b2","kind":"vm.fork","target":"bench-snap","state":"succeeded",
"stages":[
 {"name":"restore","started":"2026-11-30T01:00:00.100Z","duration_ns":800000000,"outcome":"ok","detail":"kid-1"},
 {"name":"agent ready","started":"2026-11-30T01:00:00.900Z","duration_ns":300000000,"outcome":"ok","detail":"kid-1"},
 {"name":"restore","started":"2026-11-30T01:00:01.200Z","duration_ns":800000000,"outcome":"ok","detail":"kid-2"},
 {"name":"agent ready","started":"2026-11-30T01:00:02Z","duration_ns":500000000,"outcome":"ok","detail":"kid-2"}],
"started":"2026-11-30T01:00:00Z","finished":"2026-11-30T01:00:02.600Z"}`

// A fork of two as vm.Manager reports it: each child's stages prefixed.
const prefixedForkJSON = `{"id":"d4","kind":"vm.fork","target":"bench-snap","state":"succeeded",
"stages":[
 {"name":"kid-1: restore","started":"2026-11-30T01:00:00.100Z","duration_ns":800000000,"outcome":"ok"},
 {"name":"kid-1: agent ready","started":"2026-11-30T01:00:00.900Z","duration_ns":100000000,"outcome":"ok"},
 {"name":"kid-2: restore","started":"2026-11-30T01:00:01Z","duration_ns":800000000,"outcome":"ok"},
 {"name":"kid-2: agent ready","started":"2026-11-30T01:00:01.800Z","duration_ns":400000000,"outcome":"ok"}],
"started":"2026-11-30T01:00:00Z","finished":"2026-11-30T01:00:02.300Z"}`

// A fork that reports no agent-ready stage.
const bareForkJSON = `{"id":"c3","kind":"vm.fork","state":"succeeded","stages":[
 {"name":"restore","started":"2026-11-30T01:00:00.100Z","duration_ns":800000000,"outcome":"ok"}],
"started":"2026-11-30T01:00:00Z","finished":"2026-11-30T01:00:01.250Z"}`

func op(t *testing.T, s string) api.Operation {
	t.Helper()
	var o api.Operation
	if err := json.Unmarshal([]byte(s), &o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestReadyMillis(t *testing.T) {
	for _, c := range []struct {
		name, json, vm string
		want           float64
		exact          bool
	}{
		{"cold", coldOpJSON, "bench-cold-0", 15200, true},
		{"fork kid-1", forkOpJSON, "kid-1", 1200, true},
		{"fork kid-2", forkOpJSON, "kid-2", 2500, true},
		{"fork, unnamed child: the last", forkOpJSON, "", 2500, true},
		{"no agent-ready stage", bareForkJSON, "x", 1250, false},
		{"prefixed kid-1", prefixedForkJSON, "kid-1", 1000, true},
		{"prefixed kid-2", prefixedForkJSON, "kid-2", 2200, true},
	} {
		got, exact := readyMillis(op(t, c.json), c.vm)
		if got != c.want || exact != c.exact {
			t.Errorf("%s: %v %v, want %v %v", c.name, got, exact, c.want, c.exact)
		}
	}
	if _, exact := readyMillis(api.Operation{Started: op(t, bareForkJSON).Started}, "x"); exact {
		t.Error("an unfinished operation without stages is exact")
	}
}

// Recorded from a QEMU child here (trimmed to the lines that count).
const smapsRollup = `55d7c1e4a000-7ffd4b5f6000 ---p 00000000 00:00 0                          [rollup]
Rss:              262144 kB
Pss:              121344 kB
Pss_Dirty:         80120 kB
Shared_Clean:     180000 kB
Shared_Dirty:          0 kB
Private_Clean:      2048 kB
Private_Dirty:     79872 kB
Referenced:       262144 kB
Anonymous:         80120 kB
Swap:                  0 kB
`

func TestParseProc(t *testing.T) {
	m, err := parseSmapsRollup(strings.NewReader(smapsRollup))
	if err != nil || m.PSSKiB != 121344 || m.PrivateKiB != 81920 || m.RSSKiB != 262144 {
		t.Fatalf("smaps_rollup = %+v, %v", m, err)
	}
	if _, err := parseSmapsRollup(strings.NewReader("Rss: 1 kB\n")); err == nil {
		t.Error("a rollup without Pss parsed")
	}
	if _, err := parseSmapsRollup(strings.NewReader("Pss: lots kB\n")); err == nil {
		t.Error("a bad number parsed")
	}
	avail, err := parseMemAvailable(strings.NewReader("MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    6291456 kB\nHugePages_Total:       0\n"))
	if err != nil || avail != 6291456 {
		t.Fatalf("MemAvailable = %d, %v", avail, err)
	}
	if _, err := parseMemAvailable(strings.NewReader("MemTotal: 1 kB\n")); err == nil {
		t.Error("meminfo without MemAvailable parsed")
	}
}

func TestDensityCap(t *testing.T) {
	for _, c := range []struct {
		want     int
		availKiB int64
		memMiB   int
		n        int
		capped   string
	}{
		{8, 16 << 20, 512, 8, ""},
		{40, 6 << 20, 512, 10, "memory"}, // (6 GiB - 1 GiB) / 512 MiB
		{64, 64 << 20, 256, 64, ""},
		{100, 64 << 20, 256, 64, "at most 64"},
		{4, 1 << 20, 512, 0, "memory"},
	} {
		n, why := densityCap(c.want, c.availKiB, c.memMiB)
		if n != c.n || (c.capped == "") != (why == "") || !strings.Contains(why, c.capped) {
			t.Errorf("densityCap(%d, %d KiB, %d MiB) = %d %q, want %d %q", c.want, c.availKiB, c.memMiB, n, why, c.n, c.capped)
		}
	}
}

func TestParseModes(t *testing.T) {
	if m, err := parseModes("cold, fork,cold"); err != nil || strings.Join(m, ",") != "cold,fork" {
		t.Errorf("parseModes = %v %v", m, err)
	}
	for _, bad := range []string{"", ",", "cold,hot"} {
		if _, err := parseModes(bad); err == nil {
			t.Errorf("parseModes(%q) accepted", bad)
		}
	}
}

func TestSummaryAndTable(t *testing.T) {
	s := summarize([]float64{300, 100, 200, 400})
	if s.Min != 100 || s.P50 != 200 || s.Max != 400 || s.N != 4 {
		t.Fatalf("summary = %+v", s)
	}
	cold := summarize([]float64{15200, 16000, 14800})
	fork := summarize([]float64{1200, 2500, 1000})
	if r := ratio(cold, fork); r < 12.6 || r > 12.7 {
		t.Fatalf("ratio = %v, want 15200/1200", r)
	}
	if ratio(cold, Summary{}) != 0 {
		t.Fatal("ratio against nothing")
	}
	res := &ModeResult{Host: "h", Engine: "qemu", Accel: "tcg", DiskDriver: "reflink", Runs: 3, Modes: []string{"cold", "fork"},
		Measures: map[string]map[string]Summary{"cold": {measureReady: cold, measureVMRun: summarize([]float64{20000})},
			"fork": {measureReady: fork}},
		Exact:          map[string]bool{"cold": true, "fork": false},
		Ratios:         map[string]map[string]float64{"cold/fork": {measureReady: ratio(cold, fork)}},
		SnapshotMillis: 900, PausedMillis: 430, SnapshotBytes: 200 << 20,
		Density: &DensityResult{Requested: 40, Forked: 10, CappedBy: "memory", ForkMillis: 4200,
			AvailBeforeKiB: 6 << 20, AvailAfterKiB: 5 << 20, PSS: summarizeKiB([]float64{121344}), Private: summarizeKiB([]float64{81920})}}
	var b bytes.Buffer
	printModes(&b, res)
	out := b.String()
	for _, w := range []string{
		"cold p50 (min–max)", "fork p50 (min–max)", "cold/fork",
		"create → agent ready     15.20s (14.80s–16.00s)", "1.20s (1.00s–2.50s)", "12.7×",
		"vm run -- true           20.00s (20.00s–20.00s)",
		"(fork: no agent-ready stage reported",
		"snapshot create 900.0ms (parent paused 430ms, 200 MiB on disk)",
		"density: 10 idle forks (asked 40; capped by memory) started in 4.20s",
		"PSS p50 118 MiB", "private p50 80 MiB", "host MemAvailable 6144 MiB before, 5120 MiB after (1024 MiB used)",
	} {
		if !strings.Contains(out, w) {
			t.Errorf("table lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, measureFirstCmd) {
		t.Errorf("a measure with no samples is printed:\n%s", out)
	}
	j, _ := json.Marshal(res)
	for _, k := range []string{`"min_ms":14800`, `"ratios":{"cold/fork"`, `"pss":{"min_kib":121344`, `"ready_from_stages":{"cold":true,"fork":false}`} {
		if !bytes.Contains(j, []byte(k)) {
			t.Errorf("JSON lacks %s: %s", k, j)
		}
	}
}
