package api

import (
	"errors"
	"fmt"
	"strings"
)

// Kind classifies an error so that the daemon, the CLI and the web UI agree on
// what went wrong without matching error strings. The daemon turns a Kind into
// an HTTP status and the client turns the status back with the one table in
// internal/api/httpstatus (kept out of api so that the static guest agent,
// which links api, does not link net/http).
type Kind string

const (
	KindNotFound           Kind = "NotFound"
	KindAlreadyExists      Kind = "AlreadyExists"
	KindInvalid            Kind = "Invalid"
	KindFailedPrecondition Kind = "FailedPrecondition"
	KindUnavailable        Kind = "Unavailable"
	KindInternal           Kind = "Internal"
)

// Error is an error with a kind, a message and optionally the fix a user can
// apply: in words (Fix), and when the fix is a banger command, that command
// as data (Action), which the CLI prints as a command line and the web UI
// offers in its own words. It is also the JSON body of every failed API
// call.
type Error struct {
	Kind    Kind    `json:"kind"`
	Message string  `json:"message"`
	Fix     string  `json:"fix,omitempty"`
	Action  *Action `json:"action,omitempty"`
	// cause is kept for errors.Is/As on the side that created the error; it
	// does not cross the API.
	cause error
}

func (e *Error) Error() string {
	if f := e.FixLine(); f != "" {
		return e.Message + " (fix: " + f + ")"
	}
	return e.Message
}

// FixLine is the fix as the CLI prints it: the words, then the action's
// command line ("stop it first: banger vm stop dev").
func (e *Error) FixLine() string {
	switch {
	case e.Action == nil:
		return e.Fix
	case e.Fix == "":
		return e.Action.CommandLine()
	}
	return e.Fix + ": " + e.Action.CommandLine()
}

func (e *Error) Unwrap() error { return e.cause }

// WithFix returns a copy of e carrying fix.
func (e *Error) WithFix(fix string) *Error {
	c := *e
	c.Fix = fix
	return &c
}

// WithAction returns a copy of e whose fix is the banger command verb
// (e.g. "vm start") with args; the words in Fix, if any, are kept.
func (e *Error) WithAction(verb string, args ...string) *Error {
	c := *e
	c.Action = &Action{Verb: verb, Args: args}
	return &c
}

func newErr(k Kind, format string, args ...any) *Error {
	err := fmt.Errorf(format, args...)
	return &Error{Kind: k, Message: err.Error(), cause: errors.Unwrap(err)}
}

// Constructors. format follows fmt.Errorf, so %w keeps the cause.
func NotFound(format string, args ...any) *Error { return newErr(KindNotFound, format, args...) }
func AlreadyExists(format string, args ...any) *Error {
	return newErr(KindAlreadyExists, format, args...)
}
func Invalid(format string, args ...any) *Error { return newErr(KindInvalid, format, args...) }
func FailedPrecondition(format string, args ...any) *Error {
	return newErr(KindFailedPrecondition, format, args...)
}
func Unavailable(format string, args ...any) *Error { return newErr(KindUnavailable, format, args...) }
func Internal(format string, args ...any) *Error    { return newErr(KindInternal, format, args...) }

// KindOf returns the kind of the first *Error in err's chain, or Internal.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// Is reports whether err carries kind k.
func Is(err error, k Kind) bool {
	var e *Error
	return errors.As(err, &e) && e.Kind == k
}

func IsNotFound(err error) bool           { return Is(err, KindNotFound) }
func IsAlreadyExists(err error) bool      { return Is(err, KindAlreadyExists) }
func IsInvalid(err error) bool            { return Is(err, KindInvalid) }
func IsFailedPrecondition(err error) bool { return Is(err, KindFailedPrecondition) }
func IsUnavailable(err error) bool        { return Is(err, KindUnavailable) }

// AsError converts any error to an *Error for the wire; errors without a kind
// become Internal with their message.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		// keep the outer context ("creating vm x: …") in the message, the fix once
		return &Error{Kind: e.Kind, Message: trimFix(err.Error(), e.FixLine()), Fix: e.Fix, Action: e.Action}
	}
	return &Error{Kind: KindInternal, Message: err.Error()}
}

func trimFix(msg, fix string) string {
	if fix == "" {
		return msg
	}
	return strings.Replace(msg, " (fix: "+fix+")", "", 1)
}
