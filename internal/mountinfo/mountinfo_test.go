package mountinfo

import "testing"

func TestParseLine(t *testing.T) {
	tests := []struct {
		line string
		want Mount
		ok   bool
	}{
		{"36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue",
			Mount{Point: "/mnt2", FSType: "ext3", Source: "/dev/root"}, true},
		{`42 27 7:0 / /tmp/with\040space rw,relatime - xfs /dev/loop0 rw,inode64`,
			Mount{Point: "/tmp/with space", FSType: "xfs", Source: "/dev/loop0"}, true},
		{`50 27 0:40 / /a\134b rw - tmpfs tmpfs rw`, Mount{Point: `/a\b`, FSType: "tmpfs", Source: "tmpfs"}, true},
		{"garbage", Mount{}, false},
		{"1 2 3:4 / - xfs", Mount{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseLine(tt.line)
		if ok != tt.ok || got != tt.want {
			t.Errorf("ParseLine(%q) = %+v, %v; want %+v, %v", tt.line, got, ok, tt.want, tt.ok)
		}
	}
}

func TestUnescapeTrailingBackslash(t *testing.T) {
	for in, want := range map[string]string{`a\`: `a\`, `a\04`: `a\04`, `a\040`: "a ", `\999x`: `\999x`} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{`/a/b`: "/a/b", `/a\040b`: "/a b", `/x\011y\134`: "/x\ty\\"} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
