package api

import "time"

// Wire details of the operation routes shared by the daemon, the client and
// the web UI (internal/web/assets/api.js reads OpVersionHeader by name).
const (
	// OpVersionHeader carries an operation's version on GET
	// /v1/operations/{id}; pass it back as ?version= to wait for the next
	// change.
	OpVersionHeader = "X-Banger-Op-Version"
	// MaxOpWait bounds an operation long-poll (?wait=).
	MaxOpWait = 60 * time.Second
)

// OperationOutput is the body of GET /v1/operations/{id}/output?from=N:
// the output lines from index N on and the index to ask for next.
type OperationOutput struct {
	Lines []string `json:"lines"`
	Next  int      `json:"next"`
}
