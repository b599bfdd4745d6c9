package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

// readObjects reads every object in the files (standard input when there are
// none). Lists are flattened into their items. Objects are decoded the way
// client-go decodes them (integers stay int64), which kstatus relies on.
func readObjects(files []string) ([]*unstructured.Unstructured, error) {
	if len(files) == 0 {
		return decodeObjects(os.Stdin, "standard input")
	}
	var all []*unstructured.Unstructured
	for _, path := range files {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		objs, err := decodeObjects(f, path)
		f.Close()
		if err != nil {
			return nil, err
		}
		all = append(all, objs...)
	}
	return all, nil
}

func decodeObjects(r io.Reader, source string) ([]*unstructured.Unstructured, error) {
	decoder := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		var raw json.RawMessage
		if err := decoder.Decode(&raw); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if len(bytes.TrimSpace(raw)) == 0 || bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			continue
		}
		u := &unstructured.Unstructured{}
		if err := u.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		if !u.IsList() {
			objs = append(objs, u)
			continue
		}
		err := u.EachListItem(func(item runtime.Object) error {
			objs = append(objs, item.(*unstructured.Unstructured))
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
	}
}

// judgeEach prints one verdict line for every object of the files.
func judgeEach(files []string, judge func(*unstructured.Unstructured) (string, string, error)) error {
	objs, err := readObjects(files)
	if err != nil {
		return err
	}
	for _, u := range objs {
		status, message, err := judge(u)
		if err != nil {
			return err
		}
		if err := emit(os.Stdout, describe(u, status, message)); err != nil {
			return err
		}
	}
	return nil
}

func describe(u *unstructured.Unstructured, status, message string) verdict {
	return verdict{
		Kind:      u.GetKind(),
		Namespace: u.GetNamespace(),
		Name:      u.GetName(),
		Status:    status,
		Message:   message,
	}
}
