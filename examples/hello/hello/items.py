"""A small in-memory item store: the usual CRUD routes, query parameters and JSON bodies.

Included under ``/api``. The host validates declared query parameters and JSON bodies before
calling a handler, so the handlers below only ever see well-formed input; bad input is answered
with 422 (``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}``) without calling them.
"""

import dataclasses
import itertools
import uuid
from typing import Any, Literal, TypedDict

from pyhost import HTTPError, Query, Request, Router

router = Router()


@dataclasses.dataclass
class ItemIn:
    """The body of POST and PUT. Fields with a default are optional; unknown fields are rejected."""

    name: str
    price: float
    tags: list[str] = dataclasses.field(default_factory=list)
    kind: Literal["tool", "toy", "food"] = "tool"


@dataclasses.dataclass
class Item(ItemIn):
    id: int = 0


class ItemPatch(TypedDict, total=False):
    """The body of PATCH: any subset of the fields (a TypedDict with ``total=False``)."""

    name: str
    price: float
    tags: list[str]


# A body can also be declared as a JSON Schema dict, used as it is.
ORDER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
        "note": {"type": "string", "maxLength": 200},
    },
    "required": ["quantity"],
    "additionalProperties": False,
}

_ids = itertools.count(1)
_items: dict[int, Item] = {}


def _add(data: ItemIn) -> Item:
    item = Item(**dataclasses.asdict(data), id=next(_ids))
    _items[item.id] = item
    return item


def _find(request: Request) -> Item:
    item_id: int = request.path_params["item_id"]  # already an int: the segment is {item_id:int}
    try:
        return _items[item_id]
    except KeyError:
        raise HTTPError(404, f"item {item_id} not found") from None


_add(ItemIn(name="hammer", price=12.5, tags=["garage"]))
_add(ItemIn(name="teapot", price=30.0, tags=["kitchen"], kind="tool"))
_add(ItemIn(name="yo-yo", price=3.0, tags=["garden", "kids"], kind="toy"))


@router.get(
    "/items",
    query={
        "limit": Query(int, default=10, ge=1, le=100, description="page size"),
        "offset": Query(int, default=0, ge=0),
        "tag": Query(str, default=[], multiple=True, description="?tag=a&tag=b: items with all"),
        "kind": Query(str, default=None, choices=["tool", "toy", "food"]),
        "q": Query(str, default=None, min_length=2, max_length=40, description="name contains"),
    },
)
async def list_items(request: Request) -> dict[str, Any]:
    """``request.query`` holds the declared parameters, typed, with the defaults filled in."""
    query = request.query
    found = [
        item
        for item in _items.values()
        if set(query["tag"]) <= set(item.tags)
        and (query["kind"] is None or item.kind == query["kind"])
        and (query["q"] is None or query["q"].lower() in item.name.lower())
    ]
    page = found[query["offset"] : query["offset"] + query["limit"]]
    return {"total": len(found), "items": [dataclasses.asdict(item) for item in page]}


@router.post("/items", body=ItemIn)
async def create_item(request: Request) -> tuple[dict[str, Any], int, dict[str, str]]:
    """``request.json`` was validated against ItemIn's schema; a 3-tuple sets status and headers."""
    item = _add(ItemIn(**request.json))
    return dataclasses.asdict(item), 201, {"Location": f"/api/items/{item.id}"}


@router.get("/items/{item_id:int}")
async def get_item(request: Request) -> dict[str, Any]:
    return dataclasses.asdict(_find(request))


@router.put("/items/{item_id:int}", body=ItemIn)
async def replace_item(request: Request) -> dict[str, Any]:
    item = _find(request)
    replacement = Item(**request.json, id=item.id)
    _items[item.id] = replacement
    return dataclasses.asdict(replacement)


@router.patch("/items/{item_id:int}", body=ItemPatch)
async def update_item(request: Request) -> dict[str, Any]:
    item = _find(request)
    # A TypedDict schema leaves other properties open, so keep only the declared keys.
    changes = {key: request.json[key] for key in ItemPatch.__annotations__ if key in request.json}
    updated = dataclasses.replace(item, **changes)
    _items[item.id] = updated
    return dataclasses.asdict(updated)


@router.delete("/items/{item_id:int}")
async def delete_item(request: Request) -> None:
    """Returning None answers 204 No Content."""
    del _items[_find(request).id]


@router.post("/items/{item_id:int}/orders", body=ORDER_SCHEMA)
async def order_item(request: Request) -> tuple[dict[str, Any], int]:
    item = _find(request)
    order = request.json
    total = round(item.price * order["quantity"], 2)
    return {"item": item.id, "quantity": order["quantity"], "total": total}, 201


@router.get(
    "/search",
    query={
        "code": Query(str, pattern=r"^[A-Z]{3}-[0-9]{3}$", description="required: no default"),
        "max_price": Query(float, default=None, gt=0, lt=10_000),
        "in_stock": Query(bool, default=False),
        "owner": Query(uuid.UUID, default=None),
    },
)
def search(request: Request) -> dict[str, Any]:
    """A plain ``def`` handler (run on a worker thread) with a required, pattern-checked param."""
    query = request.query
    owner: uuid.UUID | None = query["owner"]
    return {
        "code": query["code"],
        "max_price": query["max_price"],
        "in_stock": query["in_stock"],
        "owner": str(owner) if owner is not None else None,
    }
