package main

import (
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

// runKstatus prints kstatus' verdict (InProgress, Current, Failed,
// Terminating, NotFound, Unknown) for every object, computed by the library
// itself rather than by a re-implementation of its rules.
func runKstatus(files []string) error {
	return judgeEach(files, func(u *unstructured.Unstructured) (string, string, error) {
		res, err := status.Compute(u)
		if err != nil {
			return "", "", err
		}
		return res.Status.String(), res.Message, nil
	})
}
