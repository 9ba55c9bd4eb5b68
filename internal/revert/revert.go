// Package revert runs undo steps for a multi-step operation that failed
// part-way:
//
//	r := revert.New()
//	defer r.Fail()
//	…do a step…; r.Add(func() { undo the step })
//	r.Success()
//
// Fail runs the undo steps in reverse order unless Success was called.
package revert

// Reverter collects undo functions.
type Reverter struct {
	fns []func()
}

// New returns an empty Reverter.
func New() *Reverter { return &Reverter{} }

// Add registers an undo step.
func (r *Reverter) Add(f func()) { r.fns = append(r.fns, f) }

// Fail runs the undo steps, newest first, unless Success was called.
func (r *Reverter) Fail() {
	if r.fns == nil {
		return
	}
	for i := len(r.fns) - 1; i >= 0; i-- {
		r.fns[i]()
	}
	r.fns = nil
}

// Success drops the undo steps: the operation completed.
func (r *Reverter) Success() { r.fns = nil }

// Clone returns a Reverter holding the same undo steps, to hand the undo of
// a finished step to a later owner (e.g. delete).
func (r *Reverter) Clone() *Reverter {
	return &Reverter{fns: append([]func(){}, r.fns...)}
}
