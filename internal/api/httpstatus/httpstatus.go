// Package httpstatus is the one table from api error kinds to HTTP status
// codes: the daemon answers with Of, the client turns a status back with
// KindOf. It owns nothing else, and it is kept apart from internal/api so
// that what links api (the static guest agent) does not link net/http.
package httpstatus

import (
	"net/http"

	"banger/internal/api"
)

// table is the one mapping from error kind to HTTP status.
var table = map[api.Kind]int{
	api.KindNotFound:           http.StatusNotFound,
	api.KindAlreadyExists:      http.StatusConflict,
	api.KindInvalid:            http.StatusBadRequest,
	api.KindFailedPrecondition: http.StatusPreconditionFailed,
	api.KindUnavailable:        http.StatusServiceUnavailable,
	api.KindInternal:           http.StatusInternalServerError,
}

// Of returns the status code the daemon answers with for kind k.
func Of(k api.Kind) int {
	if s, ok := table[k]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// KindOf maps an HTTP status back to its error kind (the inverse of Of).
// Unknown statuses are Internal.
func KindOf(status int) api.Kind {
	for k, s := range table {
		if s == status {
			return k
		}
	}
	return api.KindInternal
}
