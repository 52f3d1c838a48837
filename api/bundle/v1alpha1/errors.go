package v1alpha1

import "kpaas.dev/appliance/api/internal/problem"

// Problem is one thing wrong with a manifest: its field path, its position
// in the manifest file (0 when not parsed from a file) and a message.
type Problem = problem.Problem

// ValidationError lists every problem found in a manifest. Parse, Load and
// Validate return it; callers that want the individual problems (for JSON
// output, say) use errors.As. Error prints one line per problem:
//
//	bundles/x.yaml:12:5: charts[2].version: required
type ValidationError = problem.ValidationError
