"""Many associations at once: 8 storers and 4 finders; every acknowledged instance is found."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from pydicom import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
)

from conftest import ServerProcess
from dimse_peers import c_find
from factories import make_dataset

STORERS, FINDERS, PER_STORER = 8, 4, 5


def test_eight_storers_and_four_finders_lose_nothing(empty_server: ServerProcess) -> None:
    # Two shared studies (and patients), so storers race to create the same rows.
    studies = [generate_uid(), generate_uid()]
    series = {(w, s): generate_uid() for w in range(STORERS) for s in studies}
    done = threading.Event()

    def store(worker: int) -> list[str]:
        ae = AE(ae_title=f"STORER{worker}")
        ae.add_requested_context(CTImageStorage)
        assoc = ae.associate("127.0.0.1", empty_server.dicom_port,
                             ae_title=empty_server.ae_title)
        assert assoc.is_established
        acknowledged = []
        try:
            for n in range(PER_STORER):
                study = studies[(worker + n) % 2]
                ds = make_dataset(study_uid=study, series_uid=series[(worker, study)],
                                  patient_id=f"CONC-{study[-4:]}", InstanceNumber=n + 1)
                status = assoc.send_c_store(ds)
                assert status.Status == 0x0000, status
                acknowledged.append(str(ds.SOPInstanceUID))
        finally:
            assoc.release()
        return acknowledged

    def find(worker: int) -> int:
        ae = AE(ae_title=f"FINDER{worker}")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        queries = 0
        while not done.is_set() or queries == 0:
            assoc = ae.associate("127.0.0.1", empty_server.dicom_port,
                                 ae_title=empty_server.ae_title)
            assert assoc.is_established
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = ""
            query.NumberOfStudyRelatedInstances = ""
            statuses = [s.Status for s, _ in assoc.send_c_find(
                query, StudyRootQueryRetrieveInformationModelFind)]
            assoc.release()
            assert statuses[-1] == 0x0000, statuses
            queries += 1
        return queries

    with ThreadPoolExecutor(STORERS + FINDERS) as pool:
        finders = [pool.submit(find, i) for i in range(FINDERS)]
        storers = [pool.submit(store, i) for i in range(STORERS)]
        try:
            acknowledged = [sop for future in storers for sop in future.result(timeout=240)]
        finally:
            done.set()  # finders stop whether storing worked or not
        assert all(future.result(timeout=60) > 0 for future in finders)

    assert len(acknowledged) == STORERS * PER_STORER
    query = Dataset()
    query.QueryRetrieveLevel = "IMAGE"
    query.SOPInstanceUID = ""
    found = {str(ds.SOPInstanceUID) for ds in c_find(empty_server, query)}
    assert found == set(acknowledged)
    per_study = Dataset()
    per_study.QueryRetrieveLevel = "STUDY"
    per_study.StudyInstanceUID = ""
    per_study.NumberOfStudyRelatedSeries = ""
    counts = {str(ds.StudyInstanceUID): int(ds.NumberOfStudyRelatedSeries)
              for ds in c_find(empty_server, per_study)}
    assert counts == {studies[0]: STORERS, studies[1]: STORERS}
