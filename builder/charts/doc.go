// Package charts loads, packages and renders Helm charts offline, and finds
// every container image a rendered chart references.
//
// # Completeness
//
// A bundle is only useful on an air-gapped site if it holds every image the
// charts in it will pull. The builder therefore does not trust a hand-written
// image list: it renders each chart with its bundle values (exactly as
// `helm template` would, CRDs and hooks included) and asks [Images] for every
// reference in the result. The builder then refuses to finish while any of
// them is missing from the bundle, unless the manifest explicitly excludes it.
//
// To keep that promise [Images] errs on the side of finding too much:
//
//   - the containers, initContainers and ephemeralContainers of every
//     built-in workload kind (Pod, PodTemplate, Deployment, StatefulSet,
//     DaemonSet, ReplicaSet, ReplicationController, Job and CronJob);
//   - every string `image:` value anywhere in a custom resource, which covers
//     operators that embed pod templates as well as their own image fields;
//   - the `artifacthub.io/images` annotation of the chart and of each of its
//     subcharts, enabled or not.
//
// An image string that does not parse as a reference is an error that names
// the template it came from; it is never dropped silently.
//
// The typical sequence is [Load], [Render] with the bundle values, then
// [Images]; [Package] writes the chart into the bundle byte-for-byte
// reproducibly.
package charts
