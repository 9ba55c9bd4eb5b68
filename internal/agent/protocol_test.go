package agent

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"testing"

	"banger/internal/api"
)

func TestReadRequest(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		wantOp  string
		wantErr string
	}{
		{"health", `{"op":"health"}` + "\n", OpHealth, ""},
		{"health at EOF without newline", `{"op":"health"}`, OpHealth, ""},
		{"unknown fields are ignored", `{"op":"health","future":1}` + "\n", OpHealth, ""},
		{"exec", `{"op":"exec","exec":{"argv":["ls","-l"],"env":{"A":"b"},"dir":"/tmp"}}` + "\n", OpExec, ""},
		{"pty with size", `{"op":"pty","exec":{"argv":["bash"]},"rows":40,"cols":120}` + "\n", OpPTY, ""},
		{"clock", `{"op":"clock","unix_nano":1700000000000000000}` + "\n", OpClock, ""},
		{"empty", "", "", "EOF"},
		{"blank line", "\n", "", "malformed request"},
		{"unknown op", `{"op":"x"}` + "\n", "", "unknown op"},
		{"argv NUL", `{"op":"exec","exec":{"argv":["a\u0000b"]}}` + "\n", "", "NUL"},
		{"empty argv0", `{"op":"exec","exec":{"argv":[""]}}` + "\n", "", "empty argv"},
		{"clock zero", `{"op":"clock"}` + "\n", "", "positive unix_nano"},
		{"wrong type", `{"op":1}` + "\n", "", "malformed request"},
		{"too long", strings.Repeat(" ", maxRequestLine+1) + "\n", "", "longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := readRequest(bufio.NewReader(strings.NewReader(tt.in)))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readRequest = %+v, %v; want error containing %q", req, err, tt.wantErr)
				}
				if !errors.Is(err, io.EOF) && !api.IsInvalid(err) {
					t.Errorf("error %v is not Invalid", err)
				}
				return
			}
			if err != nil || req.Op != tt.wantOp {
				t.Fatalf("readRequest = %+v, %v; want op %q", req, err, tt.wantOp)
			}
		})
	}
}

func TestReadRequestLeavesFramesBuffered(t *testing.T) {
	in := append([]byte(`{"op":"exec","exec":{"argv":["cat"]}}`+"\n"), appendFrame(nil, frameStdin, []byte("data"))...)
	br := bufio.NewReader(bytes.NewReader(in))
	if _, err := readRequest(br); err != nil {
		t.Fatal(err)
	}
	typ, p, err := readFrame(br)
	if err != nil || typ != frameStdin || string(p) != "data" {
		t.Errorf("frame after request = %v %q %v", typ, p, err)
	}
}

func TestFrames(t *testing.T) {
	tests := []struct {
		name    string
		in      []byte
		want    frameType
		payload string
		wantErr string
	}{
		{"stdout", appendFrame(nil, frameStdout, []byte("hi")), frameStdout, "hi", ""},
		{"empty payload", appendFrame(nil, frameStdinClose, nil), frameStdinClose, "", ""},
		{"max payload", appendFrame(nil, frameStdin, make([]byte, maxFramePayload)), frameStdin, strings.Repeat("\x00", maxFramePayload), ""},
		{"over the limit", binary.BigEndian.AppendUint32([]byte{1}, maxFramePayload+1), 0, "", "exceeds"},
		{"short header", []byte{1, 0}, 0, "", "unexpected EOF"},
		{"short payload", []byte{5, 0, 0, 0, 9, 'a'}, 0, "", "unexpected EOF"},
		{"nothing", nil, 0, "", "EOF"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			typ, p, err := readFrame(bytes.NewReader(tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("readFrame = %v, %v; want error containing %q", typ, err, tt.wantErr)
				}
				return
			}
			if err != nil || typ != tt.want || string(p) != tt.payload {
				t.Fatalf("readFrame = %v, %d bytes, %v", typ, len(p), err)
			}
		})
	}
}

// FuzzReadRequest: any input yields a valid request or an error, never a
// panic; a valid request survives a round trip.
func FuzzReadRequest(f *testing.F) {
	for _, s := range []string{
		`{"op":"health"}` + "\n",
		`{"op":"exec","exec":{"argv":["sh","-c","echo hi"],"env":{"A":"b"},"dir":"/root","tty":true}}` + "\n",
		`{"op":"pty","exec":{"argv":["bash"]},"rows":24,"cols":80}` + "\n",
		`{"op":"clock","unix_nano":1700000000000000000}` + "\n",
		`{"op":"exec","exec":null}`,
		"\x00\xff{",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := readRequest(bufio.NewReader(bytes.NewReader(data)))
		if err != nil {
			return
		}
		if err := req.validate(); err != nil {
			t.Fatalf("readRequest accepted an invalid request: %v", err)
		}
		var buf bytes.Buffer
		if err := writeJSONLine(&buf, req); err != nil {
			t.Fatal(err)
		}
		again, err := readRequest(bufio.NewReader(&buf))
		if err != nil || again.Op != req.Op {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, err)
		}
	})
}

// FuzzReadFrame: any input yields a frame or an error, never a panic; a
// frame re-encodes to the bytes it was read from.
func FuzzReadFrame(f *testing.F) {
	f.Add(appendFrame(nil, frameStdout, []byte("hello")))
	f.Add(appendFrame(nil, frameExit, []byte{0, 0, 0, 7}))
	f.Add([]byte{9, 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		typ, p, err := readFrame(bytes.NewReader(data))
		if err != nil {
			return
		}
		if len(p) > maxFramePayload {
			t.Fatalf("payload of %d bytes over the limit", len(p))
		}
		if enc := appendFrame(nil, typ, p); !bytes.Equal(enc, data[:len(enc)]) {
			t.Fatalf("re-encoding differs: %x vs %x", enc, data[:len(enc)])
		}
	})
}
