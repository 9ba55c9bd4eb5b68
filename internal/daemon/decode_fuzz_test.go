package daemon

import (
	"bytes"
	"encoding/json"
	"testing"

	"banger/internal/api"
)

// FuzzDecodeRequest feeds arbitrary bodies to DecodeRequest for every
// request type: it must never panic, every failure must be Invalid, and a
// decoded value must encode again.
func FuzzDecodeRequest(f *testing.F) {
	f.Add([]byte(`{"name":"a","image":"debian","vcpus":2,"memory_mib":1024,"disk_bytes":8589934592}`))
	f.Add([]byte(`{"name":"img","suite":"bookworm","packages":["git","curl"],"size":4294967296,"with":["opencode"]}`))
	f.Add([]byte(`{"vcpus":"two"}`))
	f.Add([]byte(`{"unknown":1}`))
	f.Add([]byte(`{} {}`))
	f.Add([]byte(``))
	f.Fuzz(func(t *testing.T, body []byte) {
		targets := []any{
			&api.VMCreateRequest{}, &api.VMEditRequest{}, &api.ImageCreateRequest{},
			&api.ImageRegisterRequest{}, &struct{}{},
		}
		for _, v := range targets {
			err := DecodeRequest(bytes.NewReader(body), v)
			if err != nil {
				if !api.IsInvalid(err) {
					t.Fatalf("%T: error %v is not Invalid", v, err)
				}
				continue
			}
			if _, err := json.Marshal(v); err != nil {
				t.Fatalf("%T: re-encoding: %v", v, err)
			}
		}
	})
}

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name, body string
		wantErr    string
	}{
		{"ok", `{"vcpus":2}`, ""},
		{"empty", ``, ""},
		{"blank", "  \n", ""},
		{"unknown field", `{"cpus":2}`, `unknown field "cpus"`},
		{"wrong type", `{"vcpus":"2"}`, `field "vcpus" must be int`},
		{"trailing", `{"vcpus":2} x`, "unexpected data"},
		{"two values", `{"vcpus":2}{}`, "unexpected data"},
		{"truncated", `{"vcpus":`, "truncated"},
		{"syntax", `{vcpus}`, "invalid JSON"},
		{"not object", `[1]`, "body must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var req api.VMEditRequest
			err := DecodeRequest(bytes.NewReader([]byte(tt.body)), &req)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !api.IsInvalid(err) || !bytes.Contains([]byte(err.Error()), []byte(tt.wantErr)) {
				t.Fatalf("err = %v, want Invalid containing %q", err, tt.wantErr)
			}
		})
	}
}
