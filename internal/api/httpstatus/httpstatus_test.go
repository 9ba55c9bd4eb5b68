package httpstatus_test

import (
	"net/http"
	"testing"

	"banger/internal/api"
	"banger/internal/api/httpstatus"
)

// Every kind survives the trip daemon → status → client.
func TestRoundTrip(t *testing.T) {
	for _, k := range []api.Kind{api.KindNotFound, api.KindAlreadyExists, api.KindInvalid,
		api.KindFailedPrecondition, api.KindUnavailable, api.KindInternal} {
		if got := httpstatus.KindOf(httpstatus.Of(k)); got != k {
			t.Errorf("%s → %d → %s", k, httpstatus.Of(k), got)
		}
	}
	if httpstatus.Of("Nope") != http.StatusInternalServerError || httpstatus.KindOf(http.StatusTeapot) != api.KindInternal {
		t.Error("unknown kinds and statuses are not Internal")
	}
}
