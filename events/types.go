// Package events is webhookd's inbound side: the workflow event model, the
// NATS subject scheme <prefix>.<workspaceId>.<eventType>, the JetStream stream
// that makes plain core-NATS publishes durable, and the decoder that turns a
// stream message into a validated Event (or a counted, terminated rejection).
package events

// Type is a workflow event type, e.g. "workflowRun.completed".
type Type string

// The event types webhookd accepts. The list is closed: an event or a
// subscription with any other type is rejected.
const (
	WorkflowRunStarted         Type = "workflowRun.started"
	WorkflowRunCompleted       Type = "workflowRun.completed"
	WorkflowRunFailed          Type = "workflowRun.failed"
	WorkflowCreditLimitReached Type = "workflowCreditLimit.reached"
)

// Types lists every valid Type in a stable order (used for metrics
// pre-registration and documentation).
var Types = []Type{WorkflowRunStarted, WorkflowRunCompleted, WorkflowRunFailed, WorkflowCreditLimitReached}

// Valid reports whether t is one of the known event types.
func (t Type) Valid() bool {
	switch t {
	case WorkflowRunStarted, WorkflowRunCompleted, WorkflowRunFailed, WorkflowCreditLimitReached:
		return true
	}
	return false
}

// String returns the wire form of t.
func (t Type) String() string { return string(t) }
