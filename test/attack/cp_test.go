package attack

import (
	"archive/tar"
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/yamux"

	"banger/internal/agent"
	"banger/internal/files"
)

// tarGuest is a fake guest agent speaking the real protocol (yamux, a
// request line, exec frames) that answers `tar -c` with the tar tarball
// writes and every other command (the path probe) with "dir".
func tarGuest(t *testing.T, tarball func(*tar.Writer)) files.Dialer {
	t.Helper()
	hostEnd, guestEnd := net.Pipe()
	sess, err := yamux.Server(guestEnd, nil)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			s, err := sess.Accept()
			if err != nil {
				return
			}
			go serveHostile(s, tarball)
		}
	}()
	c, err := agent.NewClient(hostEnd)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); sess.Close() })
	return c.OpenStream
}

func serveHostile(s net.Conn, tarball func(*tar.Writer)) {
	defer s.Close()
	br := bufio.NewReader(s)
	line, err := br.ReadBytes('\n')
	if err != nil {
		return
	}
	var req agent.Request
	if json.Unmarshal(line, &req) != nil || req.Exec == nil {
		return
	}
	go io.Copy(io.Discard, br) // stdin frames
	fw := &stdoutFrames{w: s}
	if req.Exec.Argv[0] == "tar" {
		tw := tar.NewWriter(fw)
		tarball(tw)
		tw.Close()
		fw.Write(make([]byte, 10240)) // GNU tar's record padding after the end marker
	} else {
		fw.Write([]byte("dir\n"))
	}
	s.Write(append([]byte{7}, binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 4), 0)...))
}

// stdoutFrames writes STDOUT frames (type 5).
type stdoutFrames struct{ w io.Writer }

func (f *stdoutFrames) Write(p []byte) (int, error) {
	for off := 0; off < len(p); off += 32 << 10 {
		chunk := p[off:min(off+32<<10, len(p))]
		hdr := binary.BigEndian.AppendUint32([]byte{5}, uint32(len(chunk)))
		if _, err := f.w.Write(append(hdr, chunk...)); err != nil {
			return off, err
		}
	}
	return len(p), nil
}

func file(tw *tar.Writer, name string, mode int64, body string) {
	tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(body))})
	io.WriteString(tw, body)
}

// TestAttackCpOutHostileTar: a guest answers `vm cp VM:/root/x DST` with
// tars that try to write outside DST, make devices or setuid files, or fill
// the disk. Nothing outside DST may change; inside, no device, no setuid
// bit, and at most the byte limit written.
func TestAttackCpOutHostileTar(t *testing.T) {
	huge := int64(64 << 20)
	cases := map[string]func(tw *tar.Writer, out string){
		"dotdot": func(tw *tar.Writer, out string) {
			tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
			file(tw, "x/../../escape", 0o644, "pwned")
		},
		"absolute": func(tw *tar.Writer, out string) {
			tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
			file(tw, out+"/abs", 0o644, "pwned")
		},
		"symlink-then-file": func(tw *tar.Writer, out string) {
			tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
			tw.WriteHeader(&tar.Header{Name: "x/d", Typeflag: tar.TypeSymlink, Linkname: out})
			file(tw, "x/d/file", 0o644, "pwned")
		},
		"hardlink-out": func(tw *tar.Writer, out string) {
			tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
			tw.WriteHeader(&tar.Header{Name: "x/h", Typeflag: tar.TypeLink, Linkname: out + "/secret"})
		},
		"device-and-setuid": func(tw *tar.Writer, out string) {
			tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
			tw.WriteHeader(&tar.Header{Name: "x/mem", Typeflag: tar.TypeChar, Mode: 0o666, Devmajor: 1, Devminor: 1})
			tw.WriteHeader(&tar.Header{Name: "x/fifo", Typeflag: tar.TypeFifo, Mode: 0o666})
			file(tw, "x/suid", 0o4755, "#!/bin/sh\n")
			file(tw, "x/sgid", 0o2755, "#!/bin/sh\n")
		},
		"huge": func(tw *tar.Writer, out string) {
			tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
			tw.WriteHeader(&tar.Header{Name: "x/big", Typeflag: tar.TypeReg, Mode: 0o644, Size: huge})
			io.CopyN(tw, zeros{}, huge)
		},
	}
	for name, tarball := range cases {
		t.Run(name, func(t *testing.T) {
			tmp := t.TempDir()
			outside := filepath.Join(tmp, "outside")
			dst := filepath.Join(tmp, "a", "b", "dst")
			os.MkdirAll(outside, 0o755)
			os.MkdirAll(dst, 0o755)
			os.WriteFile(filepath.Join(outside, "secret"), []byte("s3cret"), 0o600)
			dial := tarGuest(t, func(tw *tar.Writer) { tarball(tw, outside) })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			st, err := files.CopyOut(ctx, dial, "/root/x", dst, files.Limits{MaxBytes: 1 << 20, MaxEntries: 100})
			t.Logf("CopyOut: %+v, err: %v", st, err)
			assertOutsideUntouched(t, tmp, outside, dst)
			assertNoDevicesOrSetuid(t, dst)
			if name == "device-and-setuid" && err != nil {
				t.Errorf("a tar with devices and setuid files should copy (without them): %v", err)
			}
			if name != "device-and-setuid" && err == nil {
				t.Errorf("hostile tar %s copied without an error", name)
			}
		})
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// assertOutsideUntouched: under tmp only dst's tree, its parents and
// outside/secret (unchanged) exist.
func assertOutsideUntouched(t *testing.T, tmp, outside, dst string) {
	t.Helper()
	allowed := map[string]bool{tmp: true, outside: true, filepath.Join(tmp, "a"): true, filepath.Join(tmp, "a", "b"): true, filepath.Join(outside, "secret"): true}
	filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if p == dst || strings.HasPrefix(p, dst+"/") || allowed[p] {
			return nil
		}
		t.Errorf("written outside the destination: %s", p)
		return nil
	})
	if b, _ := os.ReadFile(filepath.Join(outside, "secret")); string(b) != "s3cret" {
		t.Errorf("outside/secret changed: %q", b)
	}
}

// assertNoDevicesOrSetuid checks dst's tree and bounds its size.
func assertNoDevicesOrSetuid(t *testing.T, dst string) {
	t.Helper()
	var total int64
	filepath.WalkDir(dst, func(p string, d fs.DirEntry, err error) error {
		fi, err := os.Lstat(p)
		if err != nil {
			return nil
		}
		m := fi.Mode()
		if m&(fs.ModeDevice|fs.ModeCharDevice|fs.ModeNamedPipe|fs.ModeSocket) != 0 {
			t.Errorf("special file made: %s (%v)", p, m)
		}
		if m&(fs.ModeSetuid|fs.ModeSetgid) != 0 {
			t.Errorf("setuid/setgid file made: %s (%v)", p, m)
		}
		if m.IsRegular() {
			total += fi.Size()
		}
		return nil
	})
	if total > 1<<20 {
		t.Errorf("%d bytes written, over the 1 MiB limit", total)
	}
}

// TestCpOutPaddedTar: a real tar pads its archive to 10 KiB records after
// the end marker; the copy must read them, not fail on them.
func TestCpOutPaddedTar(t *testing.T) {
	dial := tarGuest(t, func(tw *tar.Writer) {
		tw.WriteHeader(&tar.Header{Name: "x/", Typeflag: tar.TypeDir, Mode: 0o755})
		file(tw, "x/f", 0o644, "data")
	})
	dst := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := files.CopyOut(ctx, dial, "/root/x", dst, files.DefaultLimits); err != nil {
		t.Fatalf("CopyOut: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dst, "x", "f")); string(b) != "data" {
		t.Errorf("x/f = %q", b)
	}
}
