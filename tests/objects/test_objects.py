"""The object-store suites: ZarrBackend on local disk and memory://, and a backend that
implements only the three primitives.
"""

from __future__ import annotations

import copy
import os
import shutil
import uuid

import pytest

from strata.storage.objects import ObjectStore
from strata.storage.objects.base import document_bytes, from_document, parse_document
from tests.helpers import LOCAL_URL_KINDS, local_url
from tests.objects.objtests import FsObjectStoreTests, ObjectStoreTests


@pytest.fixture(params=LOCAL_URL_KINDS)
def url(request, tmp_path):
    return local_url(request.param, tmp_path, "objects")


class TestZarrBackendObjects(FsObjectStoreTests):
    pass


class DictStore(ObjectStore):
    """Implements only the three primitives: everything else comes from the base class."""

    def __init__(self, root):
        self.root = root
        self.docs = {}

    def _store_object(self, object_to_store, storage_key=None, ancillary_data_path=None):
        key = storage_key or uuid.uuid4().hex
        anc = None
        if ancillary_data_path is not None:
            anc = os.path.join(self.root, f"{key}-{uuid.uuid4().hex[:8]}")
            shutil.copytree(ancillary_data_path, anc)
        self.docs[key] = (document_bytes(object_to_store.to_document(key)), anc)
        return key

    def _retrieve_object(self, storage_key, expected_type=None):
        if storage_key not in self.docs:
            return None, None
        raw, anc = self.docs[storage_key]
        return from_document(parse_document(raw, storage_key), expected_type), anc

    def _object_exists(self, storage_key):
        return storage_key in self.docs


class RemovableDictStore(DictStore):
    def _remove_object(self, storage_key):
        _, anc = self.docs.pop(storage_key)
        if anc:
            shutil.rmtree(anc)


class TestThreePrimitives(ObjectStoreTests):
    @pytest.fixture
    def store(self, tmp_path):
        root = tmp_path / "dictstore"
        root.mkdir()
        return RemovableDictStore(str(root))

    @pytest.fixture
    def state(self, store):
        def snapshot():
            files = {}
            for root, _, names in os.walk(store.root):
                for n in names:
                    p = os.path.join(root, n)
                    with open(p, "rb") as f:
                        files[p] = (f.read(), os.stat(p).st_mtime_ns)
            return copy.deepcopy(store.docs), files

        return snapshot

    def test_without_remove_primitive(self, tmp_path):
        from tests.objects.models import Measurement

        store = DictStore(str(tmp_path))
        key = store.store_object(Measurement(run_id="r1", name="a", value=1))
        with pytest.raises(NotImplementedError):
            store.remove_object(key)
        assert store.retrieve_object(key)[0].name == "a"
