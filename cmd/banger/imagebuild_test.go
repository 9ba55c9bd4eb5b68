package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

// image build reads --script and --copy as the user running the CLI and
// sends their contents: no host path reaches the daemon.
func TestResolveBuildSendsContents(t *testing.T) {
	dir := t.TempDir()
	script := filepath.Join(dir, "setup.sh")
	conf := filepath.Join(dir, "app.conf")
	os.WriteFile(script, []byte("#!/bin/sh\ntrue\n"), 0o755)
	os.WriteFile(conf, []byte("k=v\n"), 0o640)
	var req api.ImageBuildRequest
	if err := resolveBuild(&req, script, []string{conf + ":/etc/app.conf"}, sizeFlag{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if len(req.HostPaths()) != 0 {
		t.Fatalf("host paths sent: %v", req.HostPaths())
	}
	if string(req.ScriptFile.Data) != "#!/bin/sh\ntrue\n" || req.ScriptFile.Mode != 0o755 {
		t.Errorf("script = %+v", req.ScriptFile)
	}
	if c := req.Copy[0]; string(c.File.Data) != "k=v\n" || c.File.Mode != 0o640 || c.Dst != "/etc/app.conf" {
		t.Errorf("copy = %+v", c)
	}
}

func TestResolveBuildRefuses(t *testing.T) {
	dir := t.TempDir()
	noexec := filepath.Join(dir, "s.sh")
	os.WriteFile(noexec, []byte("x"), 0o644)
	big := filepath.Join(dir, "big")
	f, _ := os.Create(big)
	f.Truncate(api.MaxBuildUpload + 1)
	f.Close()
	half := filepath.Join(dir, "half")
	f, _ = os.Create(half)
	f.Truncate(api.MaxBuildUpload/2 + 1)
	f.Close()
	for name, c := range map[string]struct {
		script string
		copies []string
		want   string
	}{
		"script not executable": {script: noexec, want: "not executable"},
		"missing":               {copies: []string{dir + "/nope:/x"}, want: "no such file"},
		"dir":                   {copies: []string{dir + ":/x"}, want: "not a regular file"},
		"too big":               {copies: []string{big + ":/x"}, want: "32 MiB limit"},
		"too big together":      {copies: []string{half + ":/x", half + ":/y"}, want: "32 MiB limit"},
		"no dst":                {copies: []string{half}, want: "not SRC:DST"},
	} {
		var req api.ImageBuildRequest
		err := resolveBuild(&req, c.script, c.copies, sizeFlag{}, time.Minute)
		if !api.IsInvalid(err) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want Invalid with %q", name, err, c.want)
		}
	}
}

func TestLogJSONWriter(t *testing.T) {
	var doc, stream strings.Builder
	w := &logJSONWriter{vm: "a", out: &doc}
	w.Write([]byte("one\ntw"))
	w.Write([]byte("o\n\x1b]52;c;x\x07"))
	w.close()
	if want := "{\n  \"vm\": \"a\",\n  \"lines\": [\n    \"one\",\n    \"two\",\n    \"\\u001b]52;c;x\\u0007\"\n  ]\n}\n"; doc.String() != want {
		t.Errorf("document = %q, want %q", doc.String(), want)
	}
	s := &logJSONWriter{vm: "a", out: &stream, stream: true}
	s.Write([]byte("one\ntwo"))
	if stream.String() != "{\"vm\":\"a\",\"line\":\"one\"}\n" {
		t.Errorf("stream before the line ends = %q", stream.String())
	}
	s.close()
	if !strings.HasSuffix(stream.String(), "{\"vm\":\"a\",\"line\":\"two\"}\n") {
		t.Errorf("stream = %q", stream.String())
	}
}
