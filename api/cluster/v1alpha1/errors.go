package v1alpha1

import "kpaas.dev/appliance/api/internal/problem"

// Problem is one thing wrong with a cluster configuration: its field path,
// its position in the file (0 when not parsed from a file) and a message.
type Problem = problem.Problem

// ValidationError lists every problem found in a cluster configuration.
// Parse, ParseFile and Validate return it; callers that want the individual
// problems (for JSON output, say) use errors.As. Error prints one line per
// problem:
//
//	cluster.yaml:12:5: nodes[2].address: "10.0.0.300/24" is not an IPv4 address with a prefix
type ValidationError = problem.ValidationError
