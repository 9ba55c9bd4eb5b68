package config

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"banger/internal/api"
)

const samplePath = "../../config/config.sample.toml"

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() is invalid: %v", err)
	}
}

var sampleKeyLine = regexp.MustCompile(`(?m)^# ([a-z_]+ = .*)$`)

// TestSampleMatchesDefault parses the shipped sample as is (all commented:
// the defaults) and with every "# key = value" line uncommented, which must
// also give exactly Default(): the documented defaults cannot drift.
func TestSampleMatchesDefault(t *testing.T) {
	data, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Path = "sample"
	got, err := Parse(data, "sample")
	if err != nil {
		t.Fatalf("parsing the sample: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("sample as shipped = %+v, want %+v", got, want)
	}
	active := sampleKeyLine.ReplaceAll(data, []byte("$1"))
	got, err = Parse(active, "sample")
	if err != nil {
		t.Fatalf("parsing the uncommented sample: %v", err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("uncommented sample =\n%+v\nwant Default()\n%+v", got, want)
	}
}

func TestSampleHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(samplePath)
	if err != nil {
		t.Fatal(err)
	}
	inSample := map[string]bool{}
	for _, m := range sampleKeyLine.FindAllSubmatch(data, -1) {
		inSample[strings.SplitN(string(m[1]), " ", 2)[0]] = true
	}
	for _, k := range Keys() {
		if !inSample[k] {
			t.Errorf("key %s is not documented in %s", k, samplePath)
		}
		delete(inSample, k)
	}
	for k := range inSample {
		t.Errorf("sample documents %s, which Config does not have", k)
	}
}

func TestParseValues(t *testing.T) {
	doc := `
state_dir = "/srv/banger"
engine = "qemu"
accel = "tcg"
subnet = "10.50.0.0/16"
memory = "512MiB"
disk_size = 2147483648
storage_pool_size = "1.5G"
stats_poll_interval = "500ms"
ready_timeout = "1m30s"
vcpus = 4
web_listen = "0.0.0.0:8080"
web_allow_remote = true
jailer_bin = "/usr/bin/jailer"
jailer_uid = 1000
jailer_gid = 1000
`
	c, err := Parse([]byte(doc), "/x.toml")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Path = "/x.toml"
	want.StateDir, want.Engine, want.Accel = "/srv/banger", "qemu", "tcg"
	want.Subnet = netip.MustParsePrefix("10.50.0.0/16")
	want.Memory, want.DiskSize, want.StoragePoolSize = 512*MiB, 2*GiB, 1536*MiB
	want.StatsPollInterval, want.ReadyTimeout = Duration(500*time.Millisecond), Duration(90*time.Second)
	want.VCPUs, want.WebListen, want.WebAllowRemote = 4, "0.0.0.0:8080", true
	want.JailerBin, want.JailerUID, want.JailerGID = "/usr/bin/jailer", 1000, 1000
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse =\n%+v\nwant\n%+v", c, want)
	}
	if c.DBPath() != "/srv/banger/banger.db" || c.KeyPath() != "/srv/banger/ssh/id_ed25519" ||
		c.Gateway() != netip.MustParseAddr("10.50.0.1") || c.VMsDir() != "/srv/banger/vms" ||
		c.ImagesDir() != "/srv/banger/images" || c.LogPath() != "/srv/banger/bangerd.log" ||
		c.LockPath() != "/srv/banger/bangerd.lock" {
		t.Errorf("derived paths wrong: %s %s %s", c.DBPath(), c.KeyPath(), c.Gateway())
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want []string // substrings of the error
	}{
		{"unknown key", "vcpus = 2\n\n\n\n\n\nbridge = \"br0\"\n",
			[]string{`config /x.toml line 7: unknown key "bridge" (did you mean bridge_name?)`}},
		{"typo key", "memroy = \"1G\"\n", []string{`line 1: unknown key "memroy" (did you mean memory?)`}},
		{"unknown table", "vcpus = 2\n[web]\nlisten = \"x\"\n", []string{`line 2: unknown key "web"`}},
		{"bad size", "vcpus = 2\n\n\nmemory = \"lots\"\n",
			[]string{`line 4: memory: invalid size "lots": use a number with a unit, e.g. 2GiB`}},
		{"size unit", "disk_size = \"5 furlongs\"\n", []string{"line 1: disk_size: invalid size"}},
		{"negative size", "memory = \"-1G\"\n", []string{"line 1: memory: invalid size"}},
		{"fractional bytes", "memory = \"1.5\"\n", []string{"line 1: memory: invalid size"}},
		{"size too small", "\nmemory = \"64MiB\"\n", []string{"line 2: memory: 64MiB is below the minimum 128MiB"}},
		{"bad duration", "ready_timeout = \"soon\"\n", []string{`line 1: ready_timeout: invalid duration "soon"`}},
		{"duration integer", "ready_timeout = 5\n", []string{`line 1: ready_timeout: expected a duration such as "5s", got the integer 5`}},
		{"string for int", "vcpus = \"two\"\n", []string{`line 1: vcpus: expected an integer, got the string "two"`}},
		{"int for string", "engine = 3\n", []string{"line 1: engine: expected a quoted string, got the integer 3"}},
		{"table for bool", "web_allow_remote = {a = 1}\n", []string{"line 1: web_allow_remote: expected true or false, got a table"}},
		{"vcpus range", "vcpus = 0\n", []string{"line 1: vcpus: 0 is out of range 1..32"}},
		{"tap pool range", "tap_pool_size = 65\n", []string{"tap_pool_size: 65 is out of range 0..64"}},
		{"bad engine", "engine = \"vmware\"\n", []string{`engine: "vmware" is not one of auto, firecracker, qemu`}},
		{"bad accel", "accel = \"hvf\"\n", []string{`accel: "hvf" is not one of auto, kvm, tcg`}},
		{"bad log level", "log_level = \"loud\"\n", []string{"log_level:"}},
		{"bad disk driver", "disk_driver = \"zfs\"\n", []string{"disk_driver:"}},
		{"bad storage pool", "storage_pool = \"yes\"\n", []string{"storage_pool:"}},
		{"ipv6 subnet", "subnet = \"fd00::/64\"\n", []string{"line 1: subnet: fd00::/64 is not IPv4"}},
		{"subnet too big", "subnet = \"10.0.0.0/8\"\n", []string{"subnet: prefix length /8 is out of range /16../29"}},
		{"subnet too small", "subnet = \"10.0.0.0/30\"\n", []string{"out of range /16../29"}},
		{"subnet host bits", "subnet = \"10.203.0.7/24\"\n", []string{"use 10.203.0.0/24"}},
		{"subnet garbage", "subnet = \"lan\"\n", []string{"line 1: subnet:"}},
		{"relative state dir", "state_dir = \"var/lib\"\n", []string{`state_dir: "var/lib" must be an absolute path`}},
		{"bridge too long", "bridge_name = \"a-very-long-bridge\"\n", []string{"bridge_name:"}},
		{"remote web", "web_listen = \"0.0.0.0:7070\"\n", []string{"web_listen:", "web_allow_remote = true"}},
		{"bad web listen", "web_listen = \"7070\"\n", []string{"not host:port"}},
		{"vm uid base root", "vm_uid_base = 0\n", []string{"line 1: vm_uid_base:"}},
		{"syntax error", "vcpus = 2\nmemory = \"1G\n", []string{"config /x.toml line 2:"}},
		{"duplicate key", "vcpus = 2\nvcpus = 3\n", []string{"line 2:"}},
		{"two problems", "engine = \"x\"\naccel = \"y\"\n", []string{"line 1: engine:", "line 2: accel:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), "/x.toml")
			wantInvalid(t, tt.doc, err, tt.want)
			if !strings.Contains(err.Error(), "fix: edit /x.toml") {
				t.Errorf("error %q has no fix", err)
			}
		})
	}
}

// wantInvalid fails t unless err (from parsing doc) is Invalid and says
// every string in want.
func wantInvalid(t *testing.T, doc string, err error, want []string) {
	t.Helper()
	if err == nil {
		t.Fatalf("Parse(%q) succeeded", doc)
	}
	if !api.IsInvalid(err) {
		t.Errorf("kind = %s, want Invalid", api.KindOf(err))
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error\n  %s\nwant it to contain\n  %s", err, w)
		}
	}
}

func TestSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		str  string
	}{
		{"512MiB", 512 * MiB, "512MiB"},
		{"2G", 2 * GiB, "2GiB"},
		{"4GiB", 4 * GiB, "4GiB"},
		{"1.5G", 1536 * MiB, "1536MiB"},
		{"1gib", GiB, "1GiB"},
		{"100KB", 100_000, "100000"},
		{"1GB", 1_000_000_000, "1000000000"},
		{"3 T", 3 * TiB, "3TiB"},
		{"4096", 4 * KiB, "4KiB"},
		{"12B", 12, "12"},
		{"0", 0, "0"},
	}
	for _, tt := range tests {
		var s Size
		if err := s.UnmarshalText([]byte(tt.in)); err != nil {
			t.Errorf("UnmarshalText(%q): %v", tt.in, err)
			continue
		}
		if s != tt.want || s.String() != tt.str {
			t.Errorf("%q = %d (%s), want %d (%s)", tt.in, s, s, tt.want, tt.str)
		}
		b, _ := s.MarshalText()
		var back Size
		if err := back.UnmarshalText(b); err != nil || back != s {
			t.Errorf("round trip of %q via %q = %d, %v", tt.in, b, back, err)
		}
	}
	for _, bad := range []string{"", "G", "lots", "-1G", "1.2.3G", "1e3", "0.5", "1XB", "99999999999T"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) succeeded", bad)
		}
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"2s", 2 * time.Second}, {"500ms", 500 * time.Millisecond}, {"1m30s", 90 * time.Second}, {"2h", 2 * time.Hour},
	}
	for _, tt := range tests {
		var d Duration
		if err := d.UnmarshalText([]byte(tt.in)); err != nil || d.D() != tt.want {
			t.Errorf("%q = %v, %v; want %v", tt.in, d, err, tt.want)
		}
		b, _ := d.MarshalText()
		var back Duration
		if err := back.UnmarshalText(b); err != nil || back != d {
			t.Errorf("round trip of %q = %v, %v", tt.in, back, err)
		}
	}
	for _, bad := range []string{"", "5", "soon", "1y"} {
		var d Duration
		if err := d.UnmarshalText([]byte(bad)); err == nil {
			t.Errorf("Duration %q accepted", bad)
		}
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	flagFile := filepath.Join(dir, "flag.toml")
	envFile := filepath.Join(dir, "env.toml")
	defFile := filepath.Join(dir, "default.toml")
	os.WriteFile(flagFile, []byte("vcpus = 3\n"), 0o644)
	os.WriteFile(envFile, []byte("vcpus = 5\n"), 0o644)
	os.WriteFile(defFile, []byte("vcpus = 7\n"), 0o644)
	missingDef := filepath.Join(dir, "etc-banger", "config.toml")
	dirDef := t.TempDir() // a directory where the default file should be: unreadable as a file

	tests := []struct {
		name           string
		flag, env, def string
		wantPath       string
		wantVCPUs      int
		wantErr        string
	}{
		{"flag wins over env", flagFile, envFile, defFile, flagFile, 3, ""},
		{"env when no flag", "", envFile, defFile, envFile, 5, ""},
		{"default file when nothing named", "", "", defFile, defFile, 7, ""},
		{"defaults when nothing named and no default file", "", "", missingDef, "", Default().VCPUs, ""},
		{"missing flag file", filepath.Join(dir, "nope.toml"), envFile, defFile, "", 0, "nope.toml does not exist"},
		{"missing env file", "", filepath.Join(dir, "gone.toml"), defFile, "", 0, "gone.toml does not exist"},
		{"unreadable default file", "", "", dirDef, "", 0, "reading config " + dirDef},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(tt.flag, tt.env, tt.def)
			if tt.wantErr != "" {
				if err == nil || !api.IsInvalid(err) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("load = %v, want Invalid containing %q", err, tt.wantErr)
				}
				var ae *api.Error
				if !errors.As(err, &ae) || ae.Fix == "" {
					t.Errorf("error %v has no fix", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Path != tt.wantPath || c.VCPUs != tt.wantVCPUs {
				t.Errorf("load = path %q vcpus %d, want %q %d", c.Path, c.VCPUs, tt.wantPath, tt.wantVCPUs)
			}
		})
	}
	t.Run("Load reads the environment variable", func(t *testing.T) {
		t.Setenv(EnvVar, envFile)
		c, err := Load("")
		if err != nil || c.Path != envFile {
			t.Fatalf("Load(\"\") with $%s set = %q, %v", EnvVar, c.Path, err)
		}
	})
}

func TestEnsureSSHKey(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ssh", "id_ed25519")
	pub, err := EnsureSSHKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pub, "ssh-ed25519 ") || !strings.HasSuffix(pub, " banger") {
		t.Errorf("pub = %q, want an ssh-ed25519 authorized_keys line", pub)
	}
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{path, 0o600}, {filepath.Dir(path), 0o700 | os.ModeDir}, {path + ".pub", 0o644}} {
		st, err := os.Stat(c.path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != c.mode {
			t.Errorf("%s mode = %v, want %v", c.path, st.Mode(), c.mode)
		}
	}
	priv, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(priv), "-----BEGIN OPENSSH PRIVATE KEY-----") {
		t.Errorf("private key is not OpenSSH format: %.40q", priv)
	}
	pubFile, _ := os.ReadFile(path + ".pub")
	if strings.TrimSpace(string(pubFile)) != pub {
		t.Errorf(".pub = %q, want %q", pubFile, pub)
	}

	// Idempotent: same key, file untouched.
	again, err := EnsureSSHKey(path)
	if err != nil || again != pub {
		t.Fatalf("second EnsureSSHKey = %q, %v; want the same key", again, err)
	}
	if p2, _ := os.ReadFile(path); string(p2) != string(priv) {
		t.Error("second EnsureSSHKey rewrote the private key")
	}

	// A lost .pub is rewritten, a loose mode tightened.
	os.Remove(path + ".pub")
	os.Chmod(path, 0o644)
	again, err = EnsureSSHKey(path)
	if err != nil || again != pub {
		t.Fatalf("EnsureSSHKey after losing .pub = %q, %v", again, err)
	}
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Errorf("mode not tightened: %v", st.Mode())
	}
	if b, err := os.ReadFile(path + ".pub"); err != nil || strings.TrimSpace(string(b)) != pub {
		t.Errorf(".pub not restored: %q, %v", b, err)
	}

	// A file that is not a key is an error and is left alone.
	junk := filepath.Join(dir, "junk")
	os.WriteFile(junk, []byte("hello"), 0o600)
	if _, err := EnsureSSHKey(junk); err == nil || !strings.Contains(err.Error(), "move it aside") {
		t.Errorf("EnsureSSHKey on junk = %v, want an error with the fix", err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, "ssh", ".*tmp*")); len(leftovers) > 0 {
		t.Errorf("temporary files left: %v", leftovers)
	}
}

func TestParseErrorLinesForImplicitTables(t *testing.T) {
	tests := []struct{ doc, want string }{
		{"vcpus = 2\nx.y.z = 1\n", `line 2: unknown key "x"`},
		{"vcpus = 2\n\n[a.b]\nc = 1\n", `line 3: unknown key "a"`},
		{"vcpus = 2\n[[srv]]\nc = 1\n", `line 2: unknown key "srv"`},
	}
	for _, tt := range tests {
		_, err := Parse([]byte(tt.doc), "/x.toml")
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%q) = %v, want %q", tt.doc, err, tt.want)
		}
	}
}

func TestNetworkKeys(t *testing.T) {
	c, err := Parse([]byte("network_policy = \"none\"\nnetwork_allow = [\"10.1.2.3:3128\", \"192.168.5.0/24\"]\n"), "t")
	if err != nil || c.NetworkPolicy != "none" || len(c.NetworkAllow) != 2 || c.NetworkAllow[1] != "192.168.5.0/24" {
		t.Fatalf("got %q %q (err %v)", c.NetworkPolicy, c.NetworkAllow, err)
	}
	for in, want := range map[string]string{
		"network_policy = \"open\"\n":          `network_policy: "open" is not one of internet, none`,
		"network_allow = [\"10.0.0.300/8\"]\n": `network_allow: "10.0.0.300/8" is not an IPv4 CIDR`,
		"network_allow = [\"1.2.3.4:0\"]\n":    `network_allow: "1.2.3.4:0" is not an IPv4 CIDR`,
		"network_allow = [1]\n":                `expected an array of quoted strings`,
		"network_allow = \"10.0.0.0/8\"\n":     `expected an array of quoted strings`,
	} {
		if _, err := Parse([]byte(in), "t"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err %v, want %q", in, err, want)
		}
	}
}
