package daemon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"banger/internal/api"
	"banger/internal/api/httpstatus"
)

// MaxRequestBody bounds a request body.
const MaxRequestBody = 1 << 20

// handlerFunc is a thin handler: it writes its success response itself and
// returns an error for writeError to answer.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// wrap adds the version headers, checks the client's API version and answers
// errors — the one place errors become responses.
func (d *Daemon) wrap(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.VersionHeader, api.APIVersion)
		w.Header().Set(api.BuildHeader, d.opts.Version)
		err := checkAPIVersion(r.Header.Get(api.VersionHeader))
		if err == nil {
			err = h(w, r)
		}
		if err != nil {
			d.writeError(w, r, err)
		}
	})
}

// checkAPIVersion accepts a missing header (curl) and any version with our
// major number.
func checkAPIVersion(v string) error {
	if v == "" {
		return nil
	}
	if !api.SameMajor(v, api.APIVersion) {
		return api.Invalid("client speaks API version %s, this daemon speaks %s", v, api.APIVersion).
			WithFix("use a banger CLI from the same release as bangerd (restart the daemon after upgrading)")
	}
	return nil
}

func (d *Daemon) writeError(w http.ResponseWriter, r *http.Request, err error) {
	e := api.AsError(err)
	status := httpstatus.Of(e.Kind)
	if e.Kind == api.KindInternal {
		d.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		d.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "kind", e.Kind, "err", err)
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

// DecodeRequest decodes one JSON value from r into v: at most MaxRequestBody
// bytes, no unknown fields, nothing after the value. An empty body leaves v
// unchanged. Every failure is an Invalid error saying what is wrong.
func DecodeRequest(r io.Reader, v any) error {
	return DecodeRequestLimit(r, v, MaxRequestBody)
}

// DecodeRequestLimit is DecodeRequest with a body of at most limit bytes
// (image build, whose request carries files).
func DecodeRequestLimit(r io.Reader, v any, limit int64) error {
	body, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return api.Invalid("reading request body: %w", err)
	}
	if int64(len(body)) > limit {
		return api.Invalid("request body is larger than %d bytes", limit)
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return api.Invalid("decoding request body: %s", describeJSONError(err))
	}
	if dec.More() {
		return api.Invalid("decoding request body: unexpected data after the JSON value")
	}
	if _, err := dec.Token(); err != io.EOF {
		return api.Invalid("decoding request body: unexpected data after the JSON value")
	}
	return nil
}

func describeJSONError(err error) string {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return fmt.Sprintf("invalid JSON at byte %d: %v", syn.Offset, syn)
	case errors.As(err, &typ):
		if typ.Field != "" {
			return fmt.Sprintf("field %q must be %s, not %s", typ.Field, typ.Type, typ.Value)
		}
		return fmt.Sprintf("body must be %s, not %s", typ.Type, typ.Value)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	return err.Error()
}

func decodeBody(r *http.Request, v any) error {
	return DecodeRequest(r.Body, v)
}
