"""Stored-object classes and queries used by the object-store tests (registered on import)."""

from __future__ import annotations

from pydantic import Field

from strata.storage.objects import BaseDataQuery, BaseStoredData, ReplaceableData


class Measurement(BaseStoredData, stored_name="test.Measurement"):
    index_fields = ("run_id",)

    run_id: str
    name: str
    value: float
    tags: list[str] = Field(default_factory=list)


class DetailedMeasurement(Measurement, stored_name="test.DetailedMeasurement"):
    detail: str


class SimulationResult(ReplaceableData, stored_name="test.SimulationResult"):
    """Same substance and temperature: the same result; more samples: more information."""

    identity_fields = ("substance", "temperature")

    substance: str
    temperature: float
    samples: int
    note: str = ""

    @classmethod
    def most_information(cls, stored, other):
        return other if other.samples > stored.samples else stored


class MeasurementQuery(BaseDataQuery):
    run_id: str | None = None
    name: str | None = None
    value: float | None = None

    @classmethod
    def data_class(cls):
        return Measurement


class DetailedQuery(MeasurementQuery):
    detail: str | None = None

    @classmethod
    def data_class(cls):
        return DetailedMeasurement


class SimulationQuery(BaseDataQuery):
    substance: str | None = None

    @classmethod
    def data_class(cls):
        return SimulationResult
